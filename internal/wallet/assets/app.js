// The qshield wallet: a payer's phone in the browser. The device key is a
// non-extractable WebCrypto ECDSA P-256 key kept in IndexedDB; every API
// request is signed with it (HTTP Message Signatures, RFC 9421). QR
// decoding and the QMSP payment step run in Go compiled to WebAssembly
// (wallet.wasm, globalThis.qshield).
'use strict';

const $ = (id) => document.getElementById(id);
const state = { wallet: null, stream: null, scanning: false, code: null, offer: null };

// ---------- storage and signed requests: sign.js ----------
const kv = qsStore('qshield-wallet');
const kvGet = kv.get, kvPut = kv.put;
function signedFetch(method, path, body, extra) {
  return qsSignedFetch(state.wallet.keyId, state.wallet.privateKey, method, path, body, extra);
}

// problemText turns an error answer into a sentence for the payer; internal
// codes are never shown.
async function problemText(resp) {
  const sentences = {
    key_already_used: 'This payment code was already used. Ask the cashier for a new one.',
    code_expired: 'This payment code has expired. Ask the cashier for a new one.',
    payment_refused: 'The payment was refused. Check your balance.',
    amount_mismatch: 'The amount is not the one the merchant asked for.',
    signature_rejected: 'This phone could not be recognised. If it keeps happening, set up the wallet again.',
    client_certificate_required: 'This phone could not be recognised. Set up the wallet again.',
    rate_limited: 'Too many attempts. Wait a moment and try again.',
    enrolment_refused: 'The enrolment code is not valid for this account. Ask for a new code.',
  };
  try {
    const p = await resp.json();
    if (sentences[p.code]) return sentences[p.code];
    if (typeof p.title === 'string' && / /.test(p.title) && /\.$/.test(p.title)) return p.title;
  } catch (e) { /* not problem+json */ }
  return resp.status >= 500 ? 'The service is unavailable for a moment. Please try again.' : 'That did not work. Please try again.';
}

// ---------- views ----------
function show(view) {
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== 'v-' + view;
  document.body.dataset.view = view;
}
function status(text, ok) {
  const el = $('status');
  el.textContent = text || '';
  el.className = ok ? 'ok' : '';
}
function setOffline(off) { $('net').hidden = !off; }

// ---------- enrolment ----------
async function enrol(ev) {
  ev.preventDefault();
  const account = $('enrol-account').value.trim();
  const code = $('enrol-code').value.trim().toUpperCase();
  $('enrol-submit').disabled = true;
  status('Setting up…');
  try {
    const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    const spki = await crypto.subtle.exportKey('spki', pair.publicKey);
    const resp = await fetch('/v1/wallet/enrol', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, credentials: 'omit',
      body: JSON.stringify({ account, code, public_key: b64(spki) }),
    });
    if (!resp.ok) { status(await problemText(resp)); return; }
    const out = await resp.json();
    const w = { keyId: out.key_id, payer: out.payer, account: out.account, name: out.name, privateKey: pair.privateKey };
    await kvPut('wallet', w);
    state.wallet = w;
    status('This phone is set up.', true);
    await home();
  } catch (e) {
    status(navigator.onLine ? 'Setting up did not work. Please try again.' : 'You are offline. Connect to set up the wallet.');
  } finally {
    $('enrol-submit').disabled = false;
  }
}

// ---------- home: balance and history ----------
function renderHome(me) {
  $('home-account').textContent = me.account;
  $('home-balance').textContent = me.balance;
  $('home-available').textContent = me.available;
  const ul = $('history');
  ul.textContent = '';
  if (!me.history.length) {
    const li = document.createElement('li');
    li.textContent = 'No payments yet.';
    ul.appendChild(li);
  }
  for (const h of me.history) {
    const li = document.createElement('li');
    const left = document.createElement('span');
    left.textContent = h.text + (h.pending ? ' (pending)' : '');
    const when = document.createElement('span');
    when.className = 'when';
    when.textContent = new Date(h.when).toLocaleString();
    left.appendChild(when);
    const amt = document.createElement('span');
    amt.className = 'amt';
    amt.textContent = h.amount;
    li.append(left, amt);
    ul.appendChild(li);
  }
}

async function home() {
  show('home');
  $('home-account').textContent = state.wallet.account;
  const saved = await kvGet('me');
  if (saved) renderHome(saved);
  try {
    const resp = await signedFetch('GET', '/v1/wallet/me');
    if (!resp.ok) { status(await problemText(resp)); return; }
    const me = await resp.json();
    await kvPut('me', me);
    renderHome(me);
    setOffline(false);
  } catch (e) {
    setOffline(true);
  }
}

// ---------- scanning (camera → WebAssembly QR decoder) ----------
// cameraScan films with the back camera into the video element videoId and
// decodes frames (at most 800 px, every 80 ms) with the WebAssembly QR
// decoder until onText accepts one: onText returns null to stop the camera
// (the code is taken) or a sentence to show in hintId and keep scanning.
// cam holds the stream and the running flag (stopCamera ends it).
async function cameraScan(cam, videoId, hintId, onText) {
  $(hintId).textContent = 'Looking for a code…';
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment', width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
  } catch (e) {
    $(hintId).textContent = 'The camera is not available. Allow camera access for this page and try again.';
    return;
  }
  const video = $(videoId);
  video.srcObject = cam.stream;
  await video.play();
  cam.scanning = true;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const tick = () => {
    if (!cam.scanning) return;
    const w = video.videoWidth, h = video.videoHeight;
    if (w && h) {
      const scale = Math.min(1, 800 / Math.max(w, h));
      canvas.width = Math.round(w * scale);
      canvas.height = Math.round(h * scale);
      ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
      const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const r = globalThis.qshield.decodeQR(img.data, canvas.width, canvas.height);
      if (r.text) {
        const refusal = onText(r.text);
        if (refusal === null) { stopCamera(cam); return; }
        $(hintId).textContent = refusal;
      }
    }
    setTimeout(tick, 80);
  };
  tick();
}

function stopCamera(cam) {
  cam.scanning = false;
  if (cam.stream) { for (const t of cam.stream.getTracks()) t.stop(); }
  cam.stream = null;
}

async function startScan() {
  status('');
  show('scan');
  await cameraScan(state, 'video', 'scan-hint', (text) => {
    const hook = (globalThis.qsScanHooks || []).find((h) => h.accepts(text)); // other schemes' codes (shop.js)
    if (hook) { setTimeout(() => hook.handle(text)); return null; }
    const offer = globalThis.qshield.readCode(text);
    if (offer.error) return offer.error;
    setTimeout(() => confirmPay(text, offer));
    return null;
  });
}

function confirmPay(text, offer) {
  state.code = text;
  state.offer = offer;
  show('confirm');
  $('confirm-merchant').textContent = offer.merchantName || ('Merchant ' + offer.merchant);
  if (offer.sale) {
    $('confirm-amount').textContent = offer.amountText;
    $('confirm-amount').hidden = false;
    $('confirm-amount-entry').hidden = true;
  } else {
    $('confirm-amount').hidden = true;
    $('confirm-amount-entry').hidden = false;
  }
  $('confirm-pay').disabled = false;
}

async function pay() {
  const w = state.wallet;
  const amountText = $('confirm-amount-input').value.trim();
  const built = globalThis.qshield.buildPayment(state.code, w.payer, amountText, 'CNY');
  if (built.error) { status(built.error); return; }
  $('confirm-pay').disabled = true;
  status('Paying…');
  const t0 = performance.now();
  try {
    const resp = await signedFetch('POST', '/v1/qmsp/pay', built.body, { 'Idempotency-Key': built.idempotencyKey });
    if (!resp.ok) { result(false, await problemText(resp)); return; }
    await resp.json();
    document.body.dataset.payMs = String(Math.round(performance.now() - t0));
    result(true, 'You paid ' + built.amountText + ' to merchant ' + state.offer.merchant + '.');
  } catch (e) {
    result(false, 'The payment could not be sent. Check your connection; the code was not used, so you can try again.');
  }
}

function result(ok, text) {
  status('');
  show('result');
  $('result-title').textContent = ok ? 'Paid' : 'Not paid';
  $('result-text').textContent = text;
  document.body.dataset.result = ok ? 'paid' : 'refused';
}

// ---------- watermark (seed 003): the looping code, rendered on the phone ----------
function parseAmount(text) {
  const m = /^(\d{1,9})(?:[.,](\d{1,2}))?$/.exec(text.trim());
  if (!m) return 0;
  return Number(m[1]) * 100 + Number((m[2] || '0').padEnd(2, '0'));
}

async function showCode(ev) {
  ev.preventDefault();
  const limit = parseAmount($('wm-limit').value);
  if (limit <= 0) { status('Enter an amount such as 50.00.'); return; }
  $('wm-submit').disabled = true;
  status('Preparing your code…');
  try {
    const body = JSON.stringify({ limit });
    const resp = await signedFetch('POST', '/v1/watermark/codes', body);
    if (!resp.ok) { status(await problemText(resp)); return; }
    const code = await resp.json();
    const r = globalThis.qshield.watermarkStart(code.token, code.slot_key, Date.parse(code.server_time), Date.now());
    if (r.error) { status(r.error); return; }
    status('');
    state.wmExpires = Date.parse(code.expires_at);
    $('wm-text').textContent = 'Pays at most ' + $('wm-limit').value.trim() + ' CNY. Valid until ' + new Date(state.wmExpires).toLocaleTimeString() + '.';
    show('wm');
    document.body.dataset.wmHandle = r.handle;
    const canvas = $('wm-canvas');
    const ctx = canvas.getContext('2d');
    qsChallengeReader.start(); // the scanner's challenge: wmchallenge.js
    const draw = () => {
      if (document.body.dataset.view !== 'wm') { qsChallengeReader.stop(); return; }
      if (Date.now() > state.wmExpires) {
        qsChallengeReader.stop();
        $('wm-text').textContent = 'This code has expired. Show a new one.';
        ctx.clearRect(0, 0, canvas.width, canvas.height);
        return;
      }
      const f = globalThis.qshield.watermarkFrame(Date.now());
      if (!f.error) {
        qsChallengeReader.shown(f.bound);
        if (canvas.width !== f.width) { canvas.width = f.width; canvas.height = f.height; }
        const img = ctx.createImageData(f.width, f.height);
        for (let i = 0, j = 0; i < f.gray.length; i++, j += 4) {
          img.data[j] = img.data[j + 1] = img.data[j + 2] = f.gray[i];
          img.data[j + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
      }
      setTimeout(draw, Math.max(10, r.frameMs / 2));
    };
    draw();
  } catch (e) {
    status('You are offline. A new code needs the connection; a code already shown keeps working.');
  } finally {
    $('wm-submit').disabled = false;
  }
}

// ---------- start ----------
function wasmReady() {
  return new Promise((resolve, reject) => {
    globalThis.qshieldReady = resolve;
    const go = new Go();
    WebAssembly.instantiateStreaming(fetch('wallet.wasm'), go.importObject).then((r) => go.run(r.instance)).catch(reject);
  });
}

async function start() {
  $('enrol-form').addEventListener('submit', enrol);
  $('pay').addEventListener('click', startScan);
  $('scan-cancel').addEventListener('click', () => { stopCamera(state); home(); });
  $('confirm-pay').addEventListener('click', pay);
  $('confirm-cancel').addEventListener('click', home);
  $('result-done').addEventListener('click', home);
  $('show-code').addEventListener('click', () => { status(''); show('wmset'); });
  $('wm-form').addEventListener('submit', showCode);
  $('wm-cancel').addEventListener('click', home);
  $('wm-done').addEventListener('click', home);
  window.addEventListener('online', () => setOffline(false));
  window.addEventListener('offline', () => setOffline(true));
  setOffline(!navigator.onLine);
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js', { scope: './' }).catch(() => { /* the wallet works without it, only not offline */ });
  }
  try {
    await wasmReady();
  } catch (e) {
    show('loading');
    status('The wallet could not start in this browser.');
    return;
  }
  document.body.dataset.ready = '1';
  if (globalThis.shopStart) await globalThis.shopStart(); // seed 002 (shop.js)
  state.wallet = await kvGet('wallet');
  if (state.wallet) await home(); else show('enrol');
}

start();
