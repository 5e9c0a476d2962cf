// The front camera of the platform's watermark screen page (seed 003,
// issue 18), as the browser wallet's wmchallenge.js does it. The merchant's
// scanner shows a challenge, a QR code that changes every second; the
// phone, held with its screen to the scanner, faces it with its front
// camera. Every frame read is decoded by the project's QR decoder (the
// wallet's WebAssembly module, /wallet/wallet.wasm) and the text of a
// challenge is posted to this screen's server (…/challenge), which from
// then on stamps the code's frames bound to it: the code pays only at that
// scanner, and a video of the screen relayed to another one is refused.
// No camera, or no permission: the page says so in words, since a scanner
// that shows challenges will refuse the code.
'use strict';
(function () {
  var body = document.body, note = document.getElementById('note');
  var NO_CAMERA = 'This phone has no front camera this page can use, so the merchant\'s scanner will refuse this code. Show your code from the qshield wallet instead.';
  var DENIED = 'This page may not use the camera, so the merchant\'s scanner will refuse this code. Allow the camera for this page in your browser and reload it, or show your code from the qshield wallet.';
  var NO_READER = 'The camera reader could not start, so the merchant\'s scanner will refuse this code. Reload this page, or show your code from the qshield wallet.';
  var LOOKING = 'Front camera on. Hold the screen to the scanner so that the camera sees the scanner\'s own code.';
  var BOUND = 'The scanner has been recognised.';
  var TWO = 'Two scanners are in view. Hold the phone to one scanner only.';
  // say shows t in the note line; warn marks a line that tells the payer the
  // scanner will refuse the code.
  function say(t, warn) {
    if (!note) return;
    if (note.textContent !== t) note.textContent = t;
    note.className = warn ? 'note warn' : 'note';
  }
  // The code was paid or expired: the camera is no longer needed.
  function over() { var st = document.getElementById('status'); return !!st && /\b(paid|expired)\b/.test(st.className); }

  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof Go === 'undefined' || typeof WebAssembly === 'undefined') {
    body.dataset.camera = 'none';
    say(NO_CAMERA, true);
    return;
  }
  var decoder = new Promise(function (resolve, reject) {
    globalThis.qshieldReady = resolve;
    var go = new Go();
    fetch('/wallet/wallet.wasm').then(function (r) {
      if (!r.ok) throw new Error('decoder ' + r.status);
      return WebAssembly.instantiateStreaming ? WebAssembly.instantiateStreaming(r, go.importObject) : r.arrayBuffer().then(function (b) { return WebAssembly.instantiate(b, go.importObject); });
    }).then(function (r) { go.run(r.instance); }).catch(reject);
  });

  var stream = null, timer = 0;
  function stop() {
    clearTimeout(timer);
    if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
    stream = null;
    body.dataset.camera = 'off';
  }
  window.addEventListener('pagehide', stop);

  navigator.mediaDevices.getUserMedia({ video: { facingMode: 'user', width: { ideal: 640 }, height: { ideal: 480 } }, audio: false }).then(function (s) {
    stream = s;
    body.dataset.camera = 'on';
    say('Starting the front camera…');
    var video = document.createElement('video');
    video.muted = true;
    video.playsInline = true;
    video.srcObject = s;
    var p = video.play();
    if (p && p.catch) p.catch(function () { /* frames still arrive */ });
    return decoder.then(function () { read(video); }, function () { stop(); body.dataset.camera = 'noreader'; say(NO_READER, true); });
  }, function (e) {
    var denied = e && (e.name === 'NotAllowedError' || e.name === 'SecurityError');
    body.dataset.camera = denied ? 'denied' : 'none';
    say(denied ? DENIED : NO_CAMERA, true);
  });

  function read(video) {
    var canvas = document.createElement('canvas');
    var ctx = canvas.getContext('2d', { willReadFrequently: true });
    var last = '', lastSent = 0, sending = false, boundAt = 0;
    say(LOOKING);
    function send(text) {
      var now = Date.now();
      if (sending || (text === last && now - lastSent < 500)) return;
      sending = true;
      last = text;
      lastSent = now;
      fetch('challenge', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ challenge: text }), cache: 'no-store', credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.json() : null; }) // refused: not a current challenge, or the code is gone (the status line says so)
        .then(function (a) {
          if (!a) return;
          body.dataset.challenges = String(Number(body.dataset.challenges || 0) + 1);
          if (a.bound) { boundAt = Date.now(); body.dataset.bound = '1'; say(BOUND); } else { boundAt = 0; body.dataset.bound = ''; say(TWO, true); }
        })
        .catch(function () { /* offline: the status line says so */ })
        .then(function () { sending = false; });
    }
    function tick() {
      if (!stream) return;
      if (over()) { stop(); say(''); return; }
      var w = video.videoWidth, h = video.videoHeight;
      if (w && h) {
        var k = Math.min(1, 640 / Math.max(w, h));
        canvas.width = Math.round(w * k);
        canvas.height = Math.round(h * k);
        ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
        var r = globalThis.qshield.decodeQR(ctx.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width, canvas.height);
        if (r.text && r.text.indexOf('QSC1:') === 0 && r.text.length <= 64) send(r.text);
      }
      // The server binds frames for 2 s after the last challenge it got.
      if (boundAt && Date.now() - boundAt > 2000) { boundAt = 0; body.dataset.bound = ''; say(LOOKING); }
      timer = setTimeout(tick, 120);
    }
    tick();
  }
})();
