// The qshield merchant scanner (seed 003): films the payer's looping
// watermark code with the camera, frame by frame, until the shares of one
// code reconstruct its token (watermark/scan, in wallet.wasm), then submits
// the payment signed with the scanner's own non-extractable key.
'use strict';

const $ = (id) => document.getElementById(id);
const store = qsStore('qshield-scanner');
const st = { dev: null, stream: null, scanning: false, amountText: '' };

function show(view) {
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== 'v-' + view;
  document.body.dataset.view = view;
}
function status(text) { $('status').textContent = text || ''; }

async function problemText(resp) {
  const sentences = {
    code_used: 'This code was already used. Ask the customer to show a new one.',
    code_expired: 'This code has expired. Ask the customer to show a new one.',
    stale_shares: 'The code was not shown just now. Scan the customer\'s screen again.',
    over_limit: 'The amount is above the limit the customer set for this code.',
    payment_refused: 'The payment was refused.',
    signature_rejected: 'This scanner could not be recognised. Ask your administrator.',
    client_certificate_required: 'This scanner is not registered. Ask your administrator.',
    unknown_device: 'This scanner is not registered. Ask your administrator.',
  };
  try {
    const p = await resp.json();
    if (sentences[p.code]) return sentences[p.code];
    if (typeof p.title === 'string' && / /.test(p.title) && /\.$/.test(p.title)) return p.title;
  } catch (e) { /* not problem+json */ }
  return resp.status >= 500 ? 'The service is unavailable for a moment. Please try again.' : 'That did not work. Please try again.';
}

async function setup() {
  let dev = await store.get('device');
  if (!dev) {
    const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    dev = { keyId: '', privateKey: pair.privateKey, publicKey: b64(await crypto.subtle.exportKey('spki', pair.publicKey)) };
    await store.put('device', dev);
  }
  st.dev = dev;
  if (dev.keyId) { show('charge'); return; }
  $('setup-key').value = dev.publicKey;
  show('setup');
}

async function saveSetup(ev) {
  ev.preventDefault();
  const id = $('setup-id').value.trim().toLowerCase();
  if (!/^[0-9a-f]{1,40}$/.test(id)) { status('The device number is the letters and digits your administrator gave you.'); return; }
  st.dev.keyId = id;
  await store.put('device', st.dev);
  status('');
  show('charge');
}

async function startScan(ev) {
  ev.preventDefault();
  const r = globalThis.qshield.scanStart($('charge-amount').value.trim(), 'CNY');
  if (r.error) { status(r.error); return; }
  st.amountText = r.amountText;
  status('');
  show('scan');
  $('scan-progress').textContent = 'Looking for a code…';
  try {
    // No size constraint: the watermark is read at the camera's own pixels.
    st.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
  } catch (e) {
    $('scan-progress').textContent = 'The camera is not available. Allow camera access for this page and try again.';
    return;
  }
  const video = $('video');
  video.srcObject = st.stream;
  await video.play();
  st.scanning = true;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const tick = async () => {
    if (!st.scanning) return;
    const w = video.videoWidth, h = video.videoHeight;
    if (w && h) {
      canvas.width = w;
      canvas.height = h;
      ctx.drawImage(video, 0, 0);
      const f = globalThis.qshield.scanFrame(ctx.getImageData(0, 0, w, h).data, w, h);
      if (!f.error && f.need) $('scan-progress').textContent = 'Read ' + Math.min(f.have, f.need) + ' of ' + f.need + ' parts of the code…';
      if (f.body) { stopScan(); await submit(f.body, f.idempotencyKey); return; }
    }
    setTimeout(tick, 30);
  };
  tick();
}

function stopScan() {
  st.scanning = false;
  if (st.stream) { for (const t of st.stream.getTracks()) t.stop(); }
  st.stream = null;
}

async function submit(body, idem) {
  $('scan-progress').textContent = 'Charging…';
  try {
    const resp = await qsSignedFetch(st.dev.keyId, st.dev.privateKey, 'POST', '/v1/watermark/pay', body, { 'Idempotency-Key': idem });
    if (!resp.ok) { result(false, await problemText(resp)); return; }
    await resp.json();
    result(true, 'Paid ' + st.amountText + '.');
  } catch (e) {
    result(false, 'The payment could not be sent. Check the connection and scan again.');
  }
}

function result(ok, text) {
  show('result');
  $('result-title').textContent = ok ? 'Paid' : 'Not paid';
  $('result-text').textContent = text;
  document.body.dataset.result = ok ? 'paid' : 'refused';
}

function wasmReady() {
  return new Promise((resolve, reject) => {
    globalThis.qshieldReady = resolve;
    const go = new Go();
    WebAssembly.instantiateStreaming(fetch('/wallet/wallet.wasm'), go.importObject).then((r) => go.run(r.instance)).catch(reject);
  });
}

async function start() {
  $('setup-form').addEventListener('submit', saveSetup);
  $('charge-form').addEventListener('submit', startScan);
  $('scan-cancel').addEventListener('click', () => { stopScan(); show('charge'); });
  $('result-done').addEventListener('click', () => { status(''); show('charge'); });
  try {
    await wasmReady();
  } catch (e) {
    status('The scanner could not start in this browser.');
    return;
  }
  document.body.dataset.ready = '1';
  await setup();
}

start();
