// Biometric QR payments (seed 004) in the wallet: the phone of the scheme.
// The wallet films the POS's consumption code, checks the POS certificate
// it names against the CA root (in WebAssembly, globalThis.qshieldBioqr:
// package bioqr/phonecode, the CLI phone's code), shows merchant and
// amount, and shows the payment code for the POS's camera; the payer's
// finger goes on the POS's sensor. The bioqr keys are WebCrypto keys that
// never leave the browser: an ECDSA P-256 signing key and an ECDH P-256
// key whose public half the CA registers as the phone's encryption key.
// Uses app.js's helpers (state, $, show, status, signedFetch, problemText,
// result, home, kvGet, kvPut) and sign.js's b64.
'use strict';

const bq = { stream: null, scanning: false, offer: null, t0: 0, url: '' };

async function bqSign(key, bytes) {
  return b64(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, bytes));
}

// ---------- enrolment: the bioqr phone enrolment, with a new enrolment code ----------
async function bqEnrol(ev) {
  ev.preventDefault();
  const file = $('bq-template').files[0];
  const code = $('bq-code').value.trim().toUpperCase();
  if (!file) { status('Choose the fingerprint record from the enrolment desk.'); return; }
  if (file.size > 8192) { status('The fingerprint file could not be read.'); return; }
  $('bq-submit').disabled = true;
  status('Setting up fingerprint payments…');
  try {
    const sresp = await signedFetch('GET', '/v1/wallet/bioqr/settlement');
    if (!sresp.ok) { status(await problemText(sresp)); return; }
    const st = await sresp.json();
    const sign = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    const dec = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
    const signPub = b64(await crypto.subtle.exportKey('raw', sign.publicKey));
    const encPub = b64(await crypto.subtle.exportKey('raw', dec.publicKey));
    const tmpl = b64(await file.arrayBuffer());
    const subject = state.wallet.name + '-fp-' + b64url(crypto.getRandomValues(new Uint8Array(4)));
    const prep = globalThis.qshieldBioqr.enrolPrepare(st.credential, st.ca_root, signPub, encPub, tmpl, subject);
    if (prep.error) { status(prep.error); return; }
    const fin = globalThis.qshieldBioqr.enrolFinish(await bqSign(sign.privateKey, prep.tbs), code);
    if (fin.error) { status(fin.error); return; }
    const resp = await signedFetch('POST', '/v1/wallet/bioqr/enrol', fin.body);
    if (!resp.ok) { status(await problemText(resp)); return; }
    const certified = await resp.json();
    const inst = globalThis.qshieldBioqr.install(st.ca_root, JSON.stringify(certified), signPub);
    if (inst.error) { status(inst.error); return; }
    await kvPut('bioqr', { signKey: sign.privateKey, decKey: dec.privateKey, signPub, root: st.ca_root,
      credential: certified.credential, serial: inst.serial, account: state.wallet.account });
    $('bq-code').value = '';
    status('Fingerprint payments are set up.', true);
    await home();
  } catch (e) {
    status(navigator.onLine ? 'Setting up fingerprint payments did not work. Please try again.' : 'You are offline. Connect to set up fingerprint payments.');
  } finally {
    $('bq-submit').disabled = false;
  }
}

// ---------- paying: scan the terminal's code ----------
async function bqStart() {
  status('');
  if (!(await kvGet('bioqr'))) { show('bqset'); return; }
  bq.t0 = performance.now();
  show('bqscan');
  await cameraScan(bq, 'bq-video', 'bq-hint', (text) => {
    const o = globalThis.qshieldBioqr.read(text);
    if (o.error) return o.error;
    setTimeout(() => bqVerify(text, o));
    return null;
  });
}


// bqVerify checks the POS as the CLI phone does: its certificate (fetched
// by the serial the code names) against the pinned CA root, its revocation
// status, its signature over the code and the code's expiry.
async function bqVerify(payload, read) {
  const tDecoded = performance.now();
  document.body.dataset.bqDecodedMs = String(Math.round(tDecoded - bq.t0));
  const me = await kvGet('bioqr');
  $('bq-hint').textContent = 'Checking the terminal…';
  let st;
  try {
    const resp = await signedFetch('GET', '/v1/wallet/bioqr/pos/' + encodeURIComponent(read.posSerial));
    if (!resp.ok) { result(false, await problemText(resp)); return; }
    st = await resp.json();
  } catch (e) {
    result(false, 'The terminal could not be checked. Check your connection and scan again.');
    return;
  }
  const o = globalThis.qshieldBioqr.verify(payload, me.root, st.certificate || '', !!st.known, !!st.revoked);
  if (o.error) { result(false, o.error); return; }
  bq.offer = o;
  show('bqconfirm');
  $('bq-verified').textContent = 'Certified terminal';
  $('bq-merchant').textContent = o.merchant + ', ' + o.city;
  $('bq-amount').textContent = o.amountText;
  $('bq-confirm').disabled = false;
  document.body.dataset.bqVerifiedMs = String(Math.round(performance.now() - tDecoded));
}

// bqShowCode signs the payment message with the bioqr key and shows the
// payment code, sealed to the terminal's encryption key.
async function bqShowCode() {
  const tConfirm = performance.now();
  $('bq-confirm').disabled = true;
  const me = await kvGet('bioqr');
  try {
    const prep = globalThis.qshieldBioqr.paymentPrepare(me.account, me.credential);
    if (prep.error) { result(false, prep.error); return; }
    const fin = globalThis.qshieldBioqr.paymentFinish(await bqSign(me.signKey, prep.tbs));
    if (fin.error) { result(false, fin.error); return; }
    if (bq.url) URL.revokeObjectURL(bq.url);
    bq.url = URL.createObjectURL(new Blob([fin.png], { type: 'image/png' }));
    const img = $('bq-img');
    img.onload = () => {
      document.body.dataset.bqMs = String(Math.round(performance.now() - bq.t0));
      document.body.dataset.bqCodeMs = String(Math.round(performance.now() - tConfirm));
      document.body.dataset.bqShown = String(Date.now());
    };
    img.src = bq.url;
    $('bq-text').textContent = 'Pay ' + bq.offer.amountText + ' to ' + bq.offer.merchant + '. Valid until ' + new Date(bq.offer.expires).toLocaleTimeString() + '.';
    show('bqcode');
  } catch (e) {
    result(false, 'The payment code could not be prepared. Please try again.');
  }
}

function bqDone() {
  $('bq-img').removeAttribute('src');
  if (bq.url) { URL.revokeObjectURL(bq.url); bq.url = ''; }
  home();
}

$('bq-pay').addEventListener('click', bqStart);
$('bq-form').addEventListener('submit', bqEnrol);
$('bq-set-cancel').addEventListener('click', () => home());
$('bq-scan-cancel').addEventListener('click', () => { stopCamera(bq); home(); });
$('bq-confirm').addEventListener('click', bqShowCode);
$('bq-confirm-cancel').addEventListener('click', () => home());
$('bq-done').addEventListener('click', bqDone);
