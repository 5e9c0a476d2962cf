package kme

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/pki"
)

// maxBody bounds an ETSI request body (128 key IDs with extensions fit).
const maxBody = 64 << 10

// Handler returns the KME's HTTP handler: the ETSI GS QKD 014 API under
// /api/v1/keys/ and the KME-to-KME protocol under /api/v1/kme-sync/. It must
// be served over TLS with client certificates (see ServerTLS); a request
// without a verified client certificate gets 401.
func (k *KME) Handler() http.Handler {
	return http.HandlerFunc(k.serveHTTP)
}

func (k *KME) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	caller, role, err := k.identify(r)
	if err != nil {
		writeError(w, errorf(http.StatusUnauthorized, "a valid client certificate is required: %v", err))
		return
	}
	path := r.URL.EscapedPath()
	_, isSync := strings.CutPrefix(path, SyncPrefix)
	if k.cfg.Principals != nil {
		p, err := k.cfg.Principals.Authenticate(r.Context(), r.TLS.PeerCertificates[0])
		if err != nil {
			writeError(w, errorf(http.StatusUnauthorized, "client certificate refused: %v", err))
			return
		}
		if isSync && p.Kind != pki.PrincipalKMEPeer {
			writeError(w, errorf(http.StatusUnauthorized, "only the peer KME may use %s (caller is a %s)", SyncPrefix, p.Kind))
			return
		}
		if !isSync && !p.Is(pki.PrincipalSAE, pki.PrincipalCharger) {
			writeError(w, errorf(http.StatusUnauthorized, "only an SAE may use the key API (caller is a %s)", p.Kind))
			return
		}
		caller = p.Name
	}
	if rest, ok := strings.CutPrefix(path, SyncPrefix); ok {
		if k.cfg.PeerKMEID == "" || caller != k.cfg.PeerKMEID || (!k.cfg.AnyRole && role != pki.RoleClient) {
			writeError(w, errorf(http.StatusUnauthorized, "only the peer KME may use %s", SyncPrefix))
			return
		}
		k.serveSync(w, r, rest)
		return
	}
	if !k.cfg.AnyRole && role != pki.RoleApplication {
		writeError(w, errorf(http.StatusUnauthorized, "an SAE must present a certificate of role %q (got %q)", pki.RoleApplication, role))
		return
	}
	rest, ok := strings.CutPrefix(path, etsi014.APIPrefix)
	if !ok {
		writeError(w, errorf(http.StatusNotFound, "no such resource; the ETSI GS QKD 014 API is under %s", etsi014.APIPrefix))
		return
	}
	seg := strings.Split(rest, "/")
	if len(seg) != 2 {
		writeError(w, errorf(http.StatusNotFound, "no such resource; use %s{SAE_ID}/status, enc_keys or dec_keys", etsi014.APIPrefix))
		return
	}
	sae, err := url.PathUnescape(seg[0])
	if err != nil || !validID(sae) {
		writeError(w, errorf(http.StatusBadRequest, "malformed SAE ID in the path"))
		return
	}
	switch seg[1] {
	case "status":
		if !allow(w, r, http.MethodGet) {
			return
		}
		if r.URL.RawQuery != "" {
			writeError(w, errorf(http.StatusBadRequest, "status takes no parameters"))
			return
		}
		st, e := k.status(caller, sae)
		if e != nil {
			writeError(w, e)
			return
		}
		ext, _ := json.Marshal(k.statusExtension())
		st.StatusExtension = ext
		writeJSON(w, st)
	case "enc_keys":
		if !allow(w, r, http.MethodGet, http.MethodPost) {
			return
		}
		var number, size int
		var e *apiError
		if r.Method == http.MethodGet {
			number, size, e = parseEncQuery(r.URL.RawQuery, k.cfg.KeySizeBits)
		} else {
			var body []byte
			body, e = readBody(w, r)
			if e == nil {
				if r.URL.RawQuery != "" {
					e = errorf(http.StatusBadRequest, "POST enc_keys takes its parameters in the JSON body, not the query")
				} else {
					number, size, e = parseKeyRequest(body, k.cfg.KeySizeBits)
				}
			}
		}
		if e != nil {
			writeError(w, e)
			return
		}
		keys, e := k.encKeys(r.Context(), caller, sae, number, size)
		if e != nil {
			writeError(w, e)
			return
		}
		writeKeys(w, keys)
	case "dec_keys":
		if !allow(w, r, http.MethodGet, http.MethodPost) {
			return
		}
		var ids []string
		var e *apiError
		if r.Method == http.MethodGet {
			ids, e = parseDecQuery(r.URL.RawQuery)
		} else {
			var body []byte
			body, e = readBody(w, r)
			if e == nil {
				if r.URL.RawQuery != "" {
					e = errorf(http.StatusBadRequest, "POST dec_keys takes its parameters in the JSON body, not the query")
				} else {
					ids, e = parseKeyIDs(body)
				}
			}
		}
		if e != nil {
			writeError(w, e)
			return
		}
		keys, e := k.decKeys(r.Context(), caller, sae, ids)
		if e != nil {
			writeError(w, e)
			return
		}
		writeKeys(w, keys)
	default:
		writeError(w, errorf(http.StatusNotFound, "no such call %q; use status, enc_keys or dec_keys", seg[1]))
	}
}

func (k *KME) statusExtension() map[string]any {
	k.mu.Lock()
	reserved, bits := k.reservedCount(), k.pool.bits
	k.mu.Unlock()
	return map[string]any{
		"qshield_link":          k.Link(),
		"qshield_reserved_keys": reserved,
		// stored_key_count counts keys of key_size; the material itself
		// serves any size up to max_key_size.
		"qshield_stored_bits":  bits,
		"qshield_segment_bits": k.cfg.SegmentBits,
	}
}

func (k *KME) identify(r *http.Request) (string, pki.Role, error) {
	if r.TLS == nil {
		return "", "", errors.New("not a TLS connection")
	}
	if len(r.TLS.PeerCertificates) == 0 || len(r.TLS.VerifiedChains) == 0 {
		return "", "", errors.New("no client certificate presented")
	}
	id, err := k.cfg.Identify(r.TLS)
	if err != nil {
		return "", "", err
	}
	if !validID(id) {
		return "", "", fmt.Errorf("certificate common name %q is not a valid SAE ID", id)
	}
	role, _ := pki.RoleOf(r.TLS.PeerCertificates[0])
	return id, role, nil
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, errorf(http.StatusMethodNotAllowed, "method %s not allowed; use %s", r.Method, strings.Join(methods, " or ")))
	return false
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusBadRequest, "request body larger than %d bytes", maxBody)
		}
		return nil, errorf(http.StatusBadRequest, "cannot read the request body")
	}
	return b, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, errorf(http.StatusServiceUnavailable, "cannot encode the answer"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func writeKeys(w http.ResponseWriter, keys []Delivered) {
	b, err := keyContainerJSON(keys)
	for _, d := range keys {
		clear(d.Key)
	}
	if err != nil {
		writeError(w, errorf(http.StatusServiceUnavailable, "cannot encode the answer"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	clear(b)
}

// keyContainerOf is the Key container of keys (json.Marshal's input).
func keyContainerOf(keys []Delivered) *etsi014.KeyContainer {
	kc := etsi014.KeyContainer{Keys: make([]etsi014.Key, len(keys))}
	for i, d := range keys {
		kc.Keys[i] = etsi014.Key{KeyID: d.ID, Key: base64.StdEncoding.EncodeToString(d.Key)}
	}
	return &kc
}

// writeError writes the ETSI 014 Error object.
func writeError(w http.ResponseWriter, e *apiError) {
	body := etsi014.Error{Message: e.message, Details: e.details}
	b, _ := json.Marshal(&body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// parseUint parses a decimal count of at most 9 digits.
func parseCount(name, s string) (int, *apiError) {
	if s == "" || len(s) > 9 {
		if strings.HasPrefix(s, "-") {
			return 0, errorf(http.StatusBadRequest, "%s must be a positive integer", name).with(name, s)
		}
		return 0, errorf(http.StatusBadRequest, "%s must be a positive integer of at most 9 digits", name).with(name, s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errorf(http.StatusBadRequest, "%s must be a positive integer", name).with(name, s)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// parseEncQuery parses the query of GET enc_keys: number (default 1) and
// size (default key_size). Anything else is a 400.
func parseEncQuery(raw string, defSize int) (number, size int, e *apiError) {
	number, size = 1, defSize
	q, err := url.ParseQuery(raw)
	if err != nil {
		return 0, 0, errorf(http.StatusBadRequest, "malformed query string")
	}
	for name, vs := range q {
		if len(vs) != 1 {
			return 0, 0, errorf(http.StatusBadRequest, "parameter %s given %d times", name, len(vs))
		}
		switch name {
		case "number":
			if number, e = parseCount("number", vs[0]); e != nil {
				return 0, 0, e
			}
		case "size":
			if size, e = parseCount("size", vs[0]); e != nil {
				return 0, 0, e
			}
		default:
			return 0, 0, errorf(http.StatusBadRequest, "unknown parameter %q; enc_keys takes number and size", name)
		}
	}
	return number, size, nil
}

// parseDecQuery parses the query of GET dec_keys: exactly one key_ID.
func parseDecQuery(raw string) ([]string, *apiError) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "malformed query string")
	}
	for name := range q {
		if name != "key_ID" {
			return nil, errorf(http.StatusBadRequest, "unknown parameter %q; dec_keys takes key_ID", name)
		}
	}
	vs := q["key_ID"]
	if len(vs) != 1 {
		return nil, errorf(http.StatusBadRequest, "GET dec_keys takes exactly one key_ID (use POST for several)")
	}
	id, ok := parseUUID(vs[0])
	if !ok {
		return nil, errorf(http.StatusBadRequest, "key_ID is not a UUID").with("key_ID", vs[0])
	}
	return []string{id}, nil
}

// decodeObject decodes a JSON object into its members, rejecting malformed
// JSON, anything after the object, and members outside allowed (names are
// case-sensitive, as in the specification).
func decodeObject(body []byte, what string, allowed ...string) (map[string]json.RawMessage, *apiError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errorf(http.StatusBadRequest, "empty request body; send a JSON %s object", what)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		return nil, errorf(http.StatusBadRequest, "malformed JSON %s: %v", what, err)
	}
	if m == nil {
		return nil, errorf(http.StatusBadRequest, "the %s must be a JSON object", what)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf(http.StatusBadRequest, "malformed JSON %s: data after the object", what)
	}
	for name := range m {
		ok := false
		for _, a := range allowed {
			if name == a {
				ok = true
				break
			}
		}
		if !ok {
			return nil, errorf(http.StatusBadRequest, "unknown member %q in the %s", name, what).with("member", name)
		}
	}
	return m, nil
}

func isNull(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }

// jsonCount decodes an optional JSON integer member.
func jsonCount(m map[string]json.RawMessage, name string, def int) (int, *apiError) {
	raw := m[name]
	if isNull(raw) {
		return def, nil
	}
	return parseCount(name, string(raw))
}

// parseKeyRequest parses the Key request body of POST enc_keys.
func parseKeyRequest(body []byte, defSize int) (number, size int, e *apiError) {
	m, e := decodeObject(body, "Key request", "number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional")
	if e != nil {
		return 0, 0, e
	}
	if number, e = jsonCount(m, "number", 1); e != nil {
		return 0, 0, e
	}
	if size, e = jsonCount(m, "size", defSize); e != nil {
		return 0, 0, e
	}
	if raw := m["additional_slave_SAE_IDs"]; !isNull(raw) {
		var ids []string
		if err := json.Unmarshal(raw, &ids); err != nil {
			return 0, 0, errorf(http.StatusBadRequest, "additional_slave_SAE_IDs must be an array of strings")
		}
		if len(ids) > 0 {
			return 0, 0, errorf(http.StatusBadRequest, "key multicast is not supported (max_SAE_ID_count is 0)").with("max_SAE_ID_count", 0)
		}
	}
	for _, name := range []string{"extension_mandatory", "extension_optional"} {
		raw := m[name]
		if isNull(raw) {
			continue
		}
		var exts []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &exts); err != nil {
			return 0, 0, errorf(http.StatusBadRequest, "%s must be an array of objects", name)
		}
		if name == "extension_mandatory" && len(exts) > 0 {
			// No extension is supported: the KME must refuse what it cannot honour.
			var names []string
			for _, x := range exts {
				for n := range x {
					names = append(names, n)
				}
			}
			return 0, 0, errorf(http.StatusBadRequest, "unsupported mandatory extension(s): %s", strings.Join(names, ", ")).with("extension_mandatory", names)
		}
	}
	return number, size, nil
}

// parseKeyIDs parses the Key IDs body of POST dec_keys.
func parseKeyIDs(body []byte) ([]string, *apiError) {
	if ids, ok := parseKeyIDsFast(body); ok {
		return ids, nil
	}
	return parseKeyIDsJSON(body)
}

// parseKeyIDsJSON is parseKeyIDs for any form of the body.
func parseKeyIDsJSON(body []byte) ([]string, *apiError) {
	m, e := decodeObject(body, "Key IDs", "key_IDs", "key_IDs_extension")
	if e != nil {
		return nil, e
	}
	raw := m["key_IDs"]
	if isNull(raw) {
		return nil, errorf(http.StatusBadRequest, "key_IDs is required")
	}
	var elems []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, errorf(http.StatusBadRequest, "key_IDs must be an array of objects")
	}
	if len(elems) == 0 {
		return nil, errorf(http.StatusBadRequest, "key_IDs is empty")
	}
	ids := make([]string, 0, len(elems))
	seen := make(map[string]bool, len(elems))
	for _, km := range elems {
		if km == nil {
			return nil, errorf(http.StatusBadRequest, "key_IDs elements must be objects")
		}
		for name := range km {
			if name != "key_ID" && name != "key_ID_extension" {
				return nil, errorf(http.StatusBadRequest, "unknown member %q in a key_IDs element", name).with("member", name)
			}
		}
		var s string
		if err := json.Unmarshal(km["key_ID"], &s); err != nil || isNull(km["key_ID"]) {
			return nil, errorf(http.StatusBadRequest, "each key_IDs element needs a key_ID string")
		}
		id, ok := parseUUID(s)
		if !ok {
			return nil, errorf(http.StatusBadRequest, "key_ID is not a UUID").with("key_ID", s)
		}
		if seen[id] {
			return nil, errorf(http.StatusBadRequest, "key_ID listed twice").with("key_ID", s)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids, nil
}

// ServerTLS adapts a mutual-TLS server configuration (such as
// pki.CA.ServerTLS) for the KME: client certificates are still verified
// when presented, but a connection without one is let through so that the
// KME can answer it with the ETSI 401 error body instead of a bare handshake
// failure. The handler refuses every request without a verified
// certificate.
//
// The key exchange is restricted to the hybrid post-quantum
// X25519MLKEM768 (pki.PostQuantumOnly): quantum keys must not travel under
// a classical key exchange that a recorded session could later break.
func ServerTLS(base *tls.Config) *tls.Config {
	c := pki.PostQuantumOnly(base)
	c.ClientAuth = tls.VerifyClientCertIfGiven
	if vc := base.VerifyConnection; vc != nil {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			return vc(cs)
		}
	}
	return c
}

// Serve serves the KME on ln with TLS configuration tc (passed through
// ServerTLS) until ctx ends, then shuts down gracefully. While it runs the
// pool is reconciled with the peer at start-up and every ReconcileEvery.
func (k *KME) Serve(ctx context.Context, ln net.Listener, tc *tls.Config) error {
	srv := &http.Server{
		Handler:           k.Handler(),
		TLSConfig:         ServerTLS(tc),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(k.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	rctx, stopReconcile := context.WithCancel(ctx)
	defer stopReconcile()
	if k.peer != nil && k.cfg.ReconcileEvery > 0 {
		go k.duty(rctx, "kme-sync/"+k.cfg.KMEID, k.reconcileLoop)
	}
	if k.cfg.RedeliverWithin > 0 {
		go k.duty(rctx, "kme-sweep/"+k.cfg.KMEID, k.sweepLoop)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("kme: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("kme: shutdown: %w", err)
	}
	return nil
}

// duty runs work through Config.Duty, or directly without one.
func (k *KME) duty(ctx context.Context, name string, work func(context.Context)) {
	if k.cfg.Duty != nil {
		k.cfg.Duty(ctx, name, work)
		return
	}
	work(ctx)
}

func (k *KME) reconcileLoop(ctx context.Context) {
	// First pass once the peer answers (it may start later than us).
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := k.cfg.ReconcileEvery
		if _, err := k.Prune(ctx); err != nil {
			k.log.Debug("prune", "err", err)
		}
		if _, err := k.Reconcile(ctx); err != nil {
			k.log.Debug("reconcile", "err", err)
			next = min(next, 5*time.Second)
		}
		t.Reset(next)
	}
}

// sweepLoop deletes delivered keys once their redelivery time has passed.
func (k *KME) sweepLoop(ctx context.Context) {
	t := time.NewTicker(min(k.cfg.RedeliverWithin/2, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := k.SweepDelivered(ctx); err != nil {
			k.log.Warn("sweep delivered keys", "err", err)
		}
	}
}
