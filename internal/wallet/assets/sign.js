// Shared by the wallet and the scanner: IndexedDB storage (the device's
// non-extractable CryptoKey and what the page saved) and requests signed
// with HTTP Message Signatures (RFC 9421, ecdsa-p256-sha256, the body bound
// by an RFC 9530 sha-256 Content-Digest) under the device's key ID.
'use strict';

const enc = new TextEncoder();

// ---------- storage (IndexedDB: the key pair and what the wallet saved) ----------
function qsIDB(name) {
  return new Promise((resolve, reject) => {
    const rq = indexedDB.open(name, 1);
    rq.onupgradeneeded = () => rq.result.createObjectStore('kv');
    rq.onsuccess = () => resolve(rq.result);
    rq.onerror = () => reject(rq.error);
  });
}
function qsStore(name) {
  return { get: (key) => qsGet(name, key), put: (key, value) => qsPut(name, key, value) };
}
async function qsGet(name, key) {
  const db = await qsIDB(name);
  return new Promise((resolve, reject) => {
    const rq = db.transaction('kv').objectStore('kv').get(key);
    rq.onsuccess = () => resolve(rq.result);
    rq.onerror = () => reject(rq.error);
  });
}
async function qsPut(name, key, value) {
  const db = await qsIDB(name);
  return new Promise((resolve, reject) => {
    const tx = db.transaction('kv', 'readwrite');
    tx.objectStore('kv').put(value, key);
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
}

// ---------- encoding ----------
function b64(buf) {
  const b = new Uint8Array(buf);
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return btoa(s);
}
function b64url(buf) { return b64(buf).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''); }

// ---------- signed requests (RFC 9421, ecdsa-p256-sha256, RFC 9530 digest) ----------
async function qsSignedFetch(keyId, privateKey, method, path, body, extra) {
  const url = new URL(path, location.origin);
  const headers = new Headers();
  const lines = [];
  const comps = [];
  const add = (name, value) => { comps.push('"' + name + '"'); lines.push('"' + name + '": ' + value); };
  add('@method', method);
  add('@target-uri', url.href);
  if (body !== undefined) {
    const digest = 'sha-256=:' + b64(await crypto.subtle.digest('SHA-256', enc.encode(body))) + ':';
    headers.set('Content-Type', 'application/json');
    headers.set('Content-Digest', digest);
    add('content-digest', digest);
    add('content-type', 'application/json');
  }
  for (const [k, v] of Object.entries(extra || {})) {
    headers.set(k, v);
    add(k.toLowerCase(), v);
  }
  const created = Math.floor(Date.now() / 1000);
  const nonce = b64url(crypto.getRandomValues(new Uint8Array(16)));
  const params = '(' + comps.join(' ') + ');created=' + created + ';expires=' + (created + 60) +
    ';nonce="' + nonce + '";keyid="' + keyId + '";alg="ecdsa-p256-sha256"';
  lines.push('"@signature-params": ' + params);
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, enc.encode(lines.join('\n')));
  headers.set('Signature-Input', 'wallet=' + params);
  headers.set('Signature', 'wallet=:' + b64(sig) + ':');
  return fetch(url, { method, headers, body, cache: 'no-store', credentials: 'omit' });
}

