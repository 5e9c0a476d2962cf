// The wallet's service worker: keeps the app shell (pages, script, the
// WebAssembly module) so the wallet opens offline and shows what it saved.
// API calls always go to the network.
const CACHE = 'qshield-wallet-v1';
const SHELL = ['./', 'app.js', 'bioqr.js', 'shop.js', 'sign.js', 'wmchallenge.js', 'style.css', 'wasm_exec.js', 'wallet.wasm', 'manifest.webmanifest', 'icon.svg'];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(caches.keys().then((ks) => Promise.all(ks.filter((k) => k !== CACHE).map((k) => caches.delete(k)))).then(() => self.clients.claim()));
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== location.origin || !url.pathname.startsWith('/wallet/')) {
    return; // the API: network only
  }
  // Network first (updates apply at once), the cached shell when offline.
  e.respondWith(fetch(e.request).then((resp) => {
    if (resp.ok) {
      const copy = resp.clone();
      caches.open(CACHE).then((c) => c.put(e.request, copy));
    }
    return resp;
  }).catch(() => caches.match(e.request, { ignoreSearch: true })));
});
