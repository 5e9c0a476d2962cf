// Seed 002 in the wallet: shopping with a prepaid balance (self-verified
// keys, prepaid e-balance tokens, payments under a dynamic symmetric key,
// deposits the payer confirms). The protocol is the CLI phone's own Go code
// in wallet.wasm (qshield.sv*); this page gives it a transport (fetch) and
// a store: the wallet (its ECQV key d_U, the token keys, K_UN and the chain
// keys) never leaves the phone. It is stored AES-GCM-sealed under a
// non-extractable CryptoKey kept in the same IndexedDB: script cannot
// export that key, but it is stored beside the box, so the seal adds little
// — the boundary is the browser's storage for this origin, as for the
// wallet's WebCrypto device keys (SECURITY.md).
'use strict';

const shopAAD = new TextEncoder().encode('qshield-sv-wallet-v1');

async function shopSealKey() {
  let k = await kvGet('sv-seal-key');
  if (!k) {
    k = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
    await kvPut('sv-seal-key', k);
  }
  return k;
}

// shopSave seals the wallet JSON and stores it; the Go side waits for it
// before the next message leaves.
async function shopSave(json) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: shopAAD }, await shopSealKey(), new TextEncoder().encode(json));
  await kvPut('sv-wallet', { iv, ct });
}

async function shopLoad() {
  const box = await kvGet('sv-wallet');
  if (!box) return '';
  const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: box.iv, additionalData: shopAAD }, await shopSealKey(), box.ct);
  return new TextDecoder().decode(pt);
}

// shopFetch is the protocol's transport: the operator at this origin, a
// shop at its own (it answers CORS). No credentials, no device signature:
// a shop must not learn who pays.
async function shopFetch(url, method, headers, body) {
  const resp = await fetch(url, { method, headers, body, cache: 'no-store', credentials: 'omit' });
  return { status: resp.status, contentType: resp.headers.get('Content-Type') || '', body: await resp.text() };
}

const shop = { offer: null, registered: false };


async function shopStart() {
  $('shop').addEventListener('click', shopView);
  $('shop-back').addEventListener('click', home);
  $('shop-reg-form').addEventListener('submit', shopRegister);
  $('shop-wd-form').addEventListener('submit', shopWithdraw);
  $('shop-scan').addEventListener('click', startScan);
  $('shop-confirm').addEventListener('click', shopConfirm);
  $('shoppay-pay').addEventListener('click', shopPay);
  $('shoppay-cancel').addEventListener('click', shopView);
  try {
    let saved = '';
    try { saved = await shopLoad(); } catch (e) { saved = ''; }
    const r = globalThis.qshield.svInit(location.origin, shopFetch, shopSave, saved);
    shop.registered = !!r.registered;
    if (r.error) status(r.error);
  } catch (e) {
    // An old module without shopping (or no IndexedDB): the rest of the
    // wallet works; shopping is not offered.
    $('shop').hidden = true;
  }
}

globalThis.shopStart = shopStart;
globalThis.qsScanHooks = (globalThis.qsScanHooks || []).concat([{ accepts: (t) => t.startsWith('SV1|'), handle: shopScanned }]);

function shopView() {
  status('');
  show('shop');
  $('shop-setup').hidden = shop.registered;
  $('shop-ready').hidden = !shop.registered;
  if (!shop.registered) return;
  const st = globalThis.qshield.svStatus();
  if (st.error) { status(st.error); return; }
  $('shop-left').textContent = st.leftText;
  $('shop-tokens').textContent = st.open ? 'Held by the operator for ' + st.open + ' prepaid ' + (st.open === 1 ? 'balance' : 'balances') + '.' : 'Nothing withdrawn yet.';
}

async function shopRegister(ev) {
  ev.preventDefault();
  $('shop-reg-submit').disabled = true;
  status('Setting up shopping…');
  try {
    const r = await globalThis.qshield.svRegister($('shop-reg-id').value, $('shop-reg-code').value);
    if (r.error) { status(r.error); return; }
    shop.registered = true;
    shopView();
    status('Shopping is set up as ' + r.id + '.', true);
  } finally {
    $('shop-reg-submit').disabled = false;
  }
}

async function shopWithdraw(ev) {
  ev.preventDefault();
  $('shop-wd-submit').disabled = true;
  status('Withdrawing…');
  try {
    const r = await globalThis.qshield.svWithdraw($('shop-wd-amount').value);
    if (r.error) { status(r.error); return; }
    $('shop-wd-amount').value = '';
    shopView();
    status('Your prepaid balance of ' + r.limitText + ' is ready until ' + new Date(r.expires).toLocaleString() + '.', true);
  } finally {
    $('shop-wd-submit').disabled = false;
  }
}

async function shopScanned(text) {
  show('shoppay');
  $('shoppay-pay').disabled = true;
  $('shoppay-vendor').textContent = '…';
  $('shoppay-item').textContent = '';
  $('shoppay-price').textContent = '';
  status('Asking the shop for the price…');
  const r = await globalThis.qshield.svVendor(text);
  if (r.error) { result(false, r.error); return; }
  status('');
  shop.offer = r;
  $('shoppay-vendor').textContent = r.vendor;
  $('shoppay-item').textContent = r.description || r.item;
  $('shoppay-price').textContent = r.priceText;
  $('shoppay-pay').disabled = false;
}

async function shopPay() {
  const o = shop.offer;
  if (!o) return;
  $('shoppay-pay').disabled = true;
  status('Paying…');
  const t0 = performance.now();
  const r = await globalThis.qshield.svPay(o.url, o.item);
  if (r.error) { result(false, r.error); return; }
  document.body.dataset.payMs = String(Math.round(performance.now() - t0));
  result(true, 'You paid ' + r.priceText + ' to ' + r.vendor + ' for ' + (o.description || r.item) + '.' + (r.goods ? ' ' + r.goods : ''));
}

async function shopConfirm() {
  $('shop-confirm').disabled = true;
  status('Checking for deposits to confirm…');
  try {
    const r = await globalThis.qshield.svConfirm();
    if (r.error) { status(r.error); return; }
    const ul = $('shop-answers');
    ul.textContent = '';
    for (const a of r.answers) {
      const li = document.createElement('li');
      li.textContent = a.agreed
        ? 'You confirmed ' + a.amountText + ' to ' + a.vendor + ' (' + a.payments + (a.payments === 1 ? ' payment' : ' payments') + ' you made).'
        : 'You refused ' + a.amountText + ' to ' + a.vendor + ': it includes a payment this phone did not make. The shop is not paid.';
      li.className = a.agreed ? 'agreed' : 'refused';
      ul.appendChild(li);
    }
    status(r.answers.length ? '' : 'No shop is waiting for your confirmation.', true);
  } finally {
    $('shop-confirm').disabled = false;
  }
}
