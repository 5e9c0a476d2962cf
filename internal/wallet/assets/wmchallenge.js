// The wallet's front camera while a watermark code is shown (seed 003,
// issue 18). The merchant's scanner shows a challenge, a QR code that
// changes every second; the phone, held with its screen to the scanner,
// faces it with its front camera. Every frame read is decoded by the
// project's QR decoder (wallet.wasm) and handed to the loop's challenge
// tracker (qshield.watermarkChallenge); while the tracker holds one
// scanner's challenge, the loop binds every frame's stamp to it, so the
// code pays only at that scanner and a video of the screen relayed to
// another one is refused. No camera (refused, or none in front): the code
// loops unbound, which a scanner without challenges still accepts.
'use strict';

const qsChallengeReader = (() => {
  let stream = null;
  let timer = 0;
  let run = 0; // increments on every start and stop: a late camera answer is dropped
  let bound = null;

  function hint(text) {
    const el = document.getElementById('wm-scanner');
    if (el && el.textContent !== text) el.textContent = text;
  }

  // shown(bound) is told, for every frame the loop draws, whether it is
  // bound to a scanner's challenge.
  function shown(b) {
    if (b === bound) return;
    bound = b;
    document.body.dataset.wmBound = b ? '1' : '';
    hint(b ? 'The scanner has been recognised.' : 'Hold your phone with its screen to the scanner, so that its front camera sees the scanner\'s screen.');
  }

  async function start() {
    stop();
    const me = ++run;
    bound = null;
    shown(false);
    let s;
    try {
      s = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'user', width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (e) {
      if (me === run) hint('The front camera is not available, so the scanner may not accept this code. Allow camera access for this page and show the code again.');
      return;
    }
    if (me !== run) { for (const t of s.getTracks()) t.stop(); return; }
    stream = s;
    const video = document.createElement('video');
    video.muted = true;
    video.playsInline = true;
    video.srcObject = stream;
    try { await video.play(); } catch (e) { /* frames still arrive */ }
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    document.body.dataset.wmCamera = '1';
    const tick = () => {
      if (me !== run) return;
      const w = video.videoWidth, h = video.videoHeight;
      if (w && h) {
        const scale = Math.min(1, 640 / Math.max(w, h));
        canvas.width = Math.round(w * scale);
        canvas.height = Math.round(h * scale);
        ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
        const r = globalThis.qshield.decodeQR(ctx.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width, canvas.height);
        if (r.text) {
          const c = globalThis.qshield.watermarkChallenge(r.text, Date.now());
          if (!c.error) document.body.dataset.wmChallenges = String(Number(document.body.dataset.wmChallenges || 0) + 1);
        }
      }
      timer = setTimeout(tick, 120);
    };
    tick();
  }

  function stop() {
    run++;
    clearTimeout(timer);
    timer = 0;
    if (stream) { for (const t of stream.getTracks()) t.stop(); }
    stream = null;
    document.body.dataset.wmCamera = '';
  }

  return { start, stop, shown };
})();
