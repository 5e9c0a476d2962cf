// The qshield merchant scanner (seed 003): films the payer's looping
// watermark code with the camera, frame by frame, until the shares of one
// code reconstruct its token (watermark/scan, in wallet.wasm), then submits
// the payment signed with the scanner's own non-extractable key.
//
// With scanner challenges on (issue 18), the page also shows, beside the
// camera view, this scanner's challenge: a QR code that changes every
// second, computed in wallet.wasm from the challenge key the scanner fetches
// (GET /v1/watermark/challenge-key, signed) on the server's clock. The
// payer's phone reads it with its front camera and binds its code to it, so
// a video of the phone relayed to another scanner does not pay.
'use strict';

const $ = (id) => document.getElementById(id);
const store = qsStore('qshield-scanner');
const st = { dev: null, stream: null, scanning: false, amountText: '', challengeTimer: 0, bound: false };

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
    wrong_scanner: 'This code was shown to another scanner. Ask the customer to hold the phone to this scanner and scan again.',
    unbound_shares: 'The customer\'s phone did not see this scanner. Ask the customer to hold the phone so its front camera faces this screen, and scan again.',
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
  st.bound = await showChallenge();
  if (st.bound) globalThis.qshield.scanRequireBound();
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
  // Timings for the tests' measurements: camera frames read until the
  // code was rebuilt, and how long that took.
  const t0 = performance.now();
  let nframes = 0;
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const size = frameSize();
  const tick = async () => {
    if (!st.scanning) return;
    const vw = video.videoWidth, vh = video.videoHeight;
    if (vw && vh) {
      const half = size.half(vw, vh);
      const w = half ? vw >> 1 : vw, h = half ? vh >> 1 : vh;
      canvas.width = w;
      canvas.height = h;
      ctx.drawImage(video, 0, 0, w, h);
      const f = globalThis.qshield.scanFrame(ctx.getImageData(0, 0, w, h).data, w, h);
      size.seen(half, f);
      nframes++;
      if (!f.error && f.need) {
        $('scan-progress').textContent = st.bound && f.have >= f.need && !f.body
          ? 'The customer\'s phone has not seen this scanner yet. Ask the customer to hold the phone with its screen to this scanner.'
          : 'Read ' + Math.min(f.have, f.need) + ' of ' + f.need + ' parts of the code…';
      }
      if (f.body) {
        document.body.dataset.scanSize = half ? 'half' : 'full';
        document.body.dataset.scanMs = String(Math.round(performance.now() - t0));
        document.body.dataset.scanFrames = String(nframes);
        stopScan();
        await submit(f.body, f.idempotencyKey);
        return;
      }
    }
    setTimeout(tick, 30);
  };
  tick();
}

// frameSize decides, frame by frame, whether the scanner reads the camera's
// frame at half its size. Decoding in WebAssembly costs about the frame's
// pixel count (0.15–1 s for 1280×720 on the test machine), and a payer's
// phone held 10–20 cm from the camera shows its code at 10 or more camera
// pixels per module, which half size keeps above the scanner's floor of 5
// (watermark.Params.MinModulePx: a frame below it is refused, so half size
// makes the scanner stricter, never laxer). A code farther away reads only
// at full size, so: frames of at least 1280×720 are read at half size while
// that brings new shares of the code; when 6 half-size frames in a row
// brought none (and the code is not complete yet), every other frame is
// read at full size, and full size is kept once a full-size frame brought a
// share that half-size frames did not. Smaller frames are always read whole.
function frameSize() {
  let mode = 'half'; // 'half', 'probe' (alternate) or 'full'
  let misses = 0, flip = false, have = 0;
  return {
    half(w, h) {
      if (Math.min(w, h) < 720 || mode === 'full') return false;
      if (mode === 'probe') { flip = !flip; return flip; }
      return true;
    },
    seen(half, f) {
      const progress = !f.error && f.have > have;
      if (!f.error && f.need) have = f.have;
      const complete = !f.error && f.need && f.have >= f.need;
      if (progress) {
        misses = 0;
        if (mode === 'probe') mode = half ? 'half' : 'full';
        return;
      }
      if (mode === 'half' && !complete && ++misses >= 6) { mode = 'probe'; misses = 0; }
    },
  };
}

// showChallenge fetches this scanner's challenge key and shows its
// challenge QR code, redrawn at every slot, until stopScan, and says
// whether it shows one. A server with challenges off answers
// challenges_off: nothing is shown.
async function showChallenge() {
  const fig = $('challenge');
  fig.hidden = true;
  document.body.dataset.challenge = '';
  let key;
  try {
    const resp = await qsSignedFetch(st.dev.keyId, st.dev.privateKey, 'GET', '/v1/watermark/challenge-key');
    if (!resp.ok) {
      let code = '';
      try { code = (await resp.json()).code; } catch (e) { /* not problem+json */ }
      document.body.dataset.challenge = code === 'challenges_off' ? 'off' : 'failed';
      if (code !== 'challenges_off') status('This scanner could not get its code for the customer\'s phone; payments may be refused. Ask your administrator.');
      return false;
    }
    key = await resp.json();
  } catch (e) {
    document.body.dataset.challenge = 'failed';
    status('The scanner is offline.');
    return false;
  }
  const r = globalThis.qshield.challengeStart(key.key, Date.parse(key.server_time), Date.now());
  if (r.error) { status(r.error); return false; }
  const canvas = $('challenge-canvas');
  const ctx = canvas.getContext('2d');
  const draw = () => {
    const c = globalThis.qshield.challengeShow(Date.now());
    if (c.error) { status(c.error); return; }
    // Whole pixels per module: the phone's camera reads it from a slant.
    const scale = Math.max(1, Math.floor(320 / c.size));
    canvas.width = canvas.height = c.size * scale;
    const img = ctx.createImageData(canvas.width, canvas.height);
    for (let y = 0; y < canvas.height; y++) {
      for (let x = 0; x < canvas.width; x++) {
        const v = c.gray[Math.floor(y / scale) * c.size + Math.floor(x / scale)];
        const j = (y * canvas.width + x) * 4;
        img.data[j] = img.data[j + 1] = img.data[j + 2] = v;
        img.data[j + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    document.body.dataset.challenge = c.text;
    st.challengeTimer = setTimeout(draw, Math.max(20, c.nextMs - Date.now() + 5));
  };
  fig.hidden = false;
  draw();
  return true;
}

function stopChallenge() {
  clearTimeout(st.challengeTimer);
  st.challengeTimer = 0;
  $('challenge').hidden = true;
}

function stopScan() {
  stopChallenge();
  st.scanning = false;
  if (st.stream) { for (const t of st.stream.getTracks()) t.stop(); }
  st.stream = null;
}

async function submit(body, idem) {
  $('scan-progress').textContent = 'Charging…';
  const t0 = performance.now();
  try {
    const resp = await qsSignedFetch(st.dev.keyId, st.dev.privateKey, 'POST', '/v1/watermark/pay', body, { 'Idempotency-Key': idem });
    if (!resp.ok) { result(false, await problemText(resp)); return; }
    await resp.json();
    document.body.dataset.payMs = String(Math.round(performance.now() - t0));
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
