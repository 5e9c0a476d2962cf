// qshield console: passkey ceremonies, live feeds and small SVG charts.
// No framework and no library: the whole script is this file.
"use strict";
(function () {
  const b64u = {
    enc(buf) { let s = ""; for (const b of new Uint8Array(buf)) s += String.fromCharCode(b); return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""); },
    dec(str) { str = str.replace(/-/g, "+").replace(/_/g, "/"); while (str.length % 4) str += "="; const s = atob(str); const a = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return a.buffer; },
  };
  const status = (msg) => { const el = document.getElementById("status"); if (el) el.textContent = msg; };
  async function post(url, body) {
    const r = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : "{}" });
    let data = {}; try { data = await r.json(); } catch (e) { data = { error: "The console answered unexpectedly (" + r.status + ")." }; }
    if (!r.ok) throw new Error(data.error || ("Request failed (" + r.status + ")."));
    return data;
  }
  function credJSON(c) {
    const o = { id: c.id, rawId: b64u.enc(c.rawId), type: c.type, response: {} };
    const r = c.response;
    o.response.clientDataJSON = b64u.enc(r.clientDataJSON);
    if (r.attestationObject) { o.response.attestationObject = b64u.enc(r.attestationObject); if (r.getTransports) o.response.transports = r.getTransports(); }
    if (r.authenticatorData) { o.response.authenticatorData = b64u.enc(r.authenticatorData); o.response.signature = b64u.enc(r.signature); if (r.userHandle) o.response.userHandle = b64u.enc(r.userHandle); }
    o.clientExtensionResults = c.getClientExtensionResults ? c.getClientExtensionResults() : {};
    return o;
  }
  async function register(btn) {
    const base = location.pathname.replace(/\/$/, "");
    btn.disabled = true; status("Preparing your passkey…");
    try {
      const opts = await post(base + "/begin");
      const pk = opts.publicKey;
      pk.challenge = b64u.dec(pk.challenge); pk.user.id = b64u.dec(pk.user.id);
      (pk.excludeCredentials || []).forEach((c) => (c.id = b64u.dec(c.id)));
      status("Follow your browser's prompt…");
      const cred = await navigator.credentials.create({ publicKey: pk });
      const res = await post(base + "/finish", credJSON(cred));
      status("Passkey created. Signing you in…"); location.assign(res.next);
    } catch (e) { status(e.message || String(e)); btn.disabled = false; }
  }
  async function signin(btn) {
    btn.disabled = true; status("Waiting for your passkey…");
    try {
      const opts = await post("/console/login/begin");
      const pk = opts.publicKey;
      pk.challenge = b64u.dec(pk.challenge);
      (pk.allowCredentials || []).forEach((c) => (c.id = b64u.dec(c.id)));
      const cred = await navigator.credentials.get({ publicKey: pk });
      const next = btn.dataset.next ? "?next=" + encodeURIComponent(btn.dataset.next) : "";
      const res = await post("/console/login/finish" + next, credJSON(cred));
      location.assign(res.next);
    } catch (e) { status(e.message || String(e)); btn.disabled = false; }
  }
  function feed() {
    const table = document.getElementById("feed"); if (!table) return;
    const tbody = table.tBodies[0];
    const es = new EventSource("/console/transfers/stream?after=" + encodeURIComponent(table.dataset.after || "0"));
    es.addEventListener("transfer", (ev) => {
      const t = JSON.parse(ev.data);
      if (tbody.querySelector('tr[data-seq="' + t.seq + '"]')) return;
      const tr = document.createElement("tr"); tr.dataset.seq = t.seq; tr.className = "new";
      const cells = [t.time, null, t.from + " \u2192 " + t.to, t.amount, t.state];
      cells.forEach((v, i) => {
        const td = document.createElement("td");
        if (i === 1) { const c = document.createElement("code"); c.textContent = t.id; td.appendChild(c); if (t.memo) { td.appendChild(document.createElement("br")); const m = document.createElement("span"); m.className = "muted small"; m.textContent = t.memo; td.appendChild(m); } }
        else td.textContent = v;
        if (i === 3) td.className = "num";
        tr.appendChild(td);
      });
      tbody.insertBefore(tr, tbody.firstChild);
      while (tbody.rows.length > 200) tbody.deleteRow(tbody.rows.length - 1);
    });
    es.addEventListener("end", () => es.close());
  }
  // chart draws series (arrays of numbers) as polylines in an SVG of 400x150.
  function chart(svg, seriesList, opts) {
    const W = 400, H = 150, L = 40, B = 18, T = 6, R = 6;
    let max = opts.max || 0;
    seriesList.forEach((s) => s.forEach((v) => { if (v > max) max = v; }));
    if (max <= 0) max = 1;
    const n = Math.max(2, ...seriesList.map((s) => s.length));
    const x = (i) => L + (i * (W - L - R)) / (n - 1), y = (v) => H - B - (v / max) * (H - B - T);
    let out = '<line class="axis" x1="' + L + '" y1="' + (H - B) + '" x2="' + (W - R) + '" y2="' + (H - B) + '"/>';
    out += '<text x="2" y="' + (T + 8) + '">' + fmt(max) + '</text><text x="2" y="' + (H - B) + '">0</text>';
    if (opts.limit) out += '<line class="limit" x1="' + L + '" x2="' + (W - R) + '" y1="' + y(opts.limit) + '" y2="' + y(opts.limit) + '"/>';
    seriesList.forEach((s, k) => {
      const pts = s.map((v, i) => x(i).toFixed(1) + "," + y(Math.max(0, v)).toFixed(1)).join(" ");
      const cls = opts.classes ? opts.classes[k] : (k ? "line2" : "line");
      out += '<polyline class="' + cls + '" points="' + pts + '"/>';
    });
    svg.innerHTML = out;
  }
  const fmt = (v) => (v >= 100 ? Math.round(v) : v.toFixed(v >= 10 ? 1 : 2));
  function qkd() {
    const st = document.getElementById("linkstate"); if (!st) return;
    let samples = [];
    const draw = () => {
      const last = samples[samples.length - 1]; if (!last) return;
      const q = last.qber >= 0 ? (100 * last.qber).toFixed(2) + "%" : "not measured yet";
      st.className = "card" + (last.alarm ? " alarm" : "");
      st.textContent = (last.alarm ? "⚠ EAVESDROPPING SUSPECTED — link " : "Link ") + last.state + " · QBER " + q + " · key rate " + (last.key_rate / 1000).toFixed(1) + " kbit/s · pools " + last.pool_a + " / " + last.pool_b + " units · " + last.delivered + " keys delivered";
      chart(document.getElementById("chart-qber"), [samples.map((s) => (s.qber >= 0 ? 100 * s.qber : 0))], { max: 12, limit: 11 });
      chart(document.getElementById("chart-rate"), [samples.map((s) => s.key_rate / 1000)], {});
      chart(document.getElementById("chart-pool"), [samples.map((s) => s.pool_a), samples.map((s) => s.pool_b)], {});
    };
    const es = new EventSource("/console/qkd/stream");
    es.addEventListener("samples", (ev) => { samples = JSON.parse(ev.data) || []; draw(); });
    es.addEventListener("sample", (ev) => { samples.push(JSON.parse(ev.data)); if (samples.length > 300) samples.shift(); draw(); });
    es.addEventListener("end", () => es.close());
  }

  // Certificate signing requests made in the browser: an ECDSA P-256 key
  // pair from WebCrypto, a PKCS#10 request DER-encoded here and signed with
  // it; the private key goes to a file the person saves, never to the server.
  const asn = {
    len(n) { if (n < 128) return [n]; const b = []; while (n > 0) { b.unshift(n & 255); n >>= 8; } return [0x80 | b.length, ...b]; },
    tlv(tag, bytes) { bytes = Array.from(bytes); return [tag, ...asn.len(bytes.length), ...bytes]; },
    seq(...parts) { return asn.tlv(0x30, parts.flat()); },
    oid(s) { const p = s.split(".").map(Number); const out = [40 * p[0] + p[1]]; for (const v of p.slice(2)) { const b = [v & 127]; let x = Math.floor(v / 128); while (x > 0) { b.unshift((x & 127) | 128); x = Math.floor(x / 128); } out.push(...b); } return asn.tlv(0x06, out); },
    utf8(s) { return asn.tlv(0x0c, new TextEncoder().encode(s)); },
    int(bytes) { let a = Array.from(bytes); while (a.length > 1 && a[0] === 0 && !(a[1] & 0x80)) a.shift(); if (a[0] & 0x80) a.unshift(0); return asn.tlv(0x02, a); },
  };
  function pem(label, bytes) {
    let s = ""; for (const b of bytes) s += String.fromCharCode(b);
    return "-----BEGIN " + label + "-----\n" + btoa(s).replace(/(.{64})/g, "$1\n").replace(/\n?$/, "\n") + "-----END " + label + "-----\n";
  }
  async function makeCSR(name) {
    const kp = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", kp.publicKey));
    const subject = asn.seq(asn.tlv(0x31, asn.seq(asn.oid("2.5.4.3"), asn.utf8(name))));
    const info = asn.seq(asn.tlv(0x02, [0]), subject, Array.from(spki), [0xa0, 0x00]);
    const sig = new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, kp.privateKey, new Uint8Array(info)));
    const sigDER = asn.seq(asn.int(sig.slice(0, 32)), asn.int(sig.slice(32)));
    const csr = asn.seq(info, asn.seq(asn.oid("1.2.840.10045.4.3.2")), asn.tlv(0x03, [0, ...sigDER]));
    const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", kp.privateKey));
    return { csr: pem("CERTIFICATE REQUEST", csr), key: pem("PRIVATE KEY", pkcs8) };
  }
  function certForm() {
    const btn = document.getElementById("genkey"); if (!btn) return;
    const link = document.getElementById("keylink"), csr = document.getElementById("csr"), form = document.getElementById("cert-form");
    let saved = true;
    btn.addEventListener("click", async () => {
      const name = document.getElementById("cname").value.trim();
      if (!name) { status("Enter the name first."); return; }
      try {
        const r = await makeCSR(name);
        csr.value = r.csr;
        // A data: link, so the key is saved from the page itself (nothing is fetched).
        link.href = "data:application/x-pem-file;base64," + btoa(r.key);
        link.download = name.replace(/[^A-Za-z0-9._-]/g, "_") + "-key.pem";
        link.hidden = false; saved = false;
        status("Key generated in this browser. Save the private key file now: it exists nowhere else.");
      } catch (e) { status("This browser could not generate a key: " + (e.message || e)); }
    });
    link.addEventListener("click", () => { saved = true; });
    form.addEventListener("submit", (e) => { if (!saved && !confirm("You have not saved the private key. Issue the certificate anyway?")) e.preventDefault(); });
  }
  function schemes() {
    const pay = document.getElementById("chart-pay"); if (!pay) return;
    const totals = document.getElementById("scheme-totals").tBodies[0];
    const es = new EventSource("/console/schemes/stream");
    es.addEventListener("series", (ev) => {
      const d = JSON.parse(ev.data);
      const cls = d.schemes.map((_, i) => "s" + i);
      chart(pay, d.schemes.map((s) => s.rate), { classes: cls });
      chart(document.getElementById("chart-fail"), d.schemes.map((s) => s.failed), { classes: cls });
      chart(document.getElementById("chart-amount"), d.schemes.map((s) => s.amount), { classes: cls });
      d.schemes.forEach((s, i) => {
        const tr = totals.rows[i]; if (!tr) return;
        tr.cells[1].textContent = s.paid; tr.cells[2].textContent = s.refused; tr.cells[3].textContent = s.total || "\u2014";
      });
    });
    es.addEventListener("end", () => es.close());
  }
  document.addEventListener("DOMContentLoaded", () => {
    const r = document.getElementById("register"); if (r) r.addEventListener("click", () => register(r));
    const s = document.getElementById("signin"); if (s) s.addEventListener("click", () => signin(s));
    document.querySelectorAll("form[data-confirm]").forEach((f) => f.addEventListener("submit", (e) => { if (!confirm(f.dataset.confirm)) e.preventDefault(); }));
    feed(); qkd(); schemes(); certForm();
  });
})();
