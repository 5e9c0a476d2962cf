package kme

import (
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/qshield/qshield/httpx"
)

// The KME-to-KME protocol, served under SyncPrefix on the same mutual-TLS
// listener as the ETSI API and accepted only from the peer KME's client
// certificate (CommonName = PeerKMEID):
//
//	POST reserve   {master_SAE_ID, slave_SAE_ID, mode, keys:[{key_ID, size, units, cut}]}
//	               → 200 {} | 409 {message, missing:[unit IDs]} | 401 | 400 | 503
//	POST release   {keys:[{key_ID, units}]} → 200 {}
//	POST reconcile {unit_IDs:[…]} → 200 {missing:[…]}
//
// mode "slave": the slave SAE is attached to the receiver, which keeps the
// units reserved for it; mode "discard": both SAEs are at the sender, and
// the receiver deletes its copies. A key's units are used in order, whole,
// except the last when cut is set: then its first cut bits (see carve.go;
// a unit named in units may be the remainder of one cut earlier in the same
// request).
const SyncPrefix = "/api/v1/kme-sync/"

const (
	modeSlave   = "slave"
	modeDiscard = "discard"
)

type syncKey struct {
	KeyID string   `json:"key_ID"`
	Size  int      `json:"size,omitempty"`
	Units []string `json:"units"`
	Cut   int      `json:"cut,omitempty"` // bits taken from the last unit; 0: all of it
}

type reserveRequest struct {
	Master string    `json:"master_SAE_ID"`
	Slave  string    `json:"slave_SAE_ID"`
	Mode   string    `json:"mode"`
	Keys   []syncKey `json:"keys"`
}

type releaseRequest struct {
	Keys []syncKey `json:"keys"`
}

type reconcileRequest struct {
	UnitIDs []string `json:"unit_IDs"`
}

type syncAnswer struct {
	Message string   `json:"message,omitempty"`
	Missing []string `json:"missing,omitempty"` // not held at all
	Busy    []string `json:"busy,omitempty"`    // held but taken by a request in flight
}

// peerClient calls the peer KME.
type peerClient struct{ c *httpx.Client }

type peerError struct {
	status  int
	message string
	missing []string
}

func (e *peerError) Error() string {
	return fmt.Sprintf("peer KME answered %d: %s", e.status, e.message)
}

func newPeerClient(base string, tc *tls.Config) *peerClient {
	tr := &http.Transport{
		TLSClientConfig: tc.Clone(), ForceAttemptHTTP2: true,
		MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	c := httpx.NewClient(base, &http.Client{Transport: tr, Timeout: 20 * time.Second})
	c.Name, c.MaxResponse, c.DecodeError = "peer KME", maxSyncBody, decodePeerError
	return &peerClient{c: c}
}

// decodePeerError reads a sync answer that is not 200 (the sync protocol's
// own error body, which lists the keys the peer is missing).
func decodePeerError(status int, _ http.Header, data []byte) error {
	var ans syncAnswer
	if err := json.Unmarshal(data, &ans); err != nil {
		return fmt.Errorf("peer KME: %d, undecodable answer: %w", status, err)
	}
	return &peerError{status: status, message: ans.Message, missing: ans.Missing}
}

func (p *peerClient) call(ctx context.Context, op string, in any) (*syncAnswer, error) {
	var ans syncAnswer
	if _, err := p.c.Do(ctx, http.MethodPost, SyncPrefix+op, nil, in, &ans); err != nil {
		return nil, err
	}
	return &ans, nil
}

func (p *peerClient) reserve(ctx context.Context, r *reserveRequest) error {
	_, err := p.call(ctx, "reserve", r)
	return err
}

func (p *peerClient) release(ctx context.Context, r *releaseRequest) error {
	_, err := p.call(ctx, "release", r)
	return err
}

// maxSyncBody bounds a sync request body.
const maxSyncBody = 32 << 20

// serveSync handles the KME-to-KME endpoints; caller is the authenticated
// peer KME.
func (k *KME) serveSync(w http.ResponseWriter, r *http.Request, op string) {
	if r.Method != http.MethodPost {
		writeSync(w, http.StatusMethodNotAllowed, &syncAnswer{Message: "POST only"})
		return
	}
	body := http.MaxBytesReader(w, r.Body, maxSyncBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	switch op {
	case "reserve":
		req, err := decodeReserve(body)
		if err != nil {
			writeSync(w, http.StatusBadRequest, &syncAnswer{Message: "malformed reserve request: " + err.Error()})
			return
		}
		status, ans := k.peerReserve(r.Context(), req)
		writeSync(w, status, ans)
	case "release":
		var req releaseRequest
		if err := dec.Decode(&req); err != nil {
			writeSync(w, http.StatusBadRequest, &syncAnswer{Message: "malformed release request: " + err.Error()})
			return
		}
		status, ans := k.peerRelease(r.Context(), &req)
		writeSync(w, status, ans)
	case "reconcile":
		var req reconcileRequest
		if err := dec.Decode(&req); err != nil {
			writeSync(w, http.StatusBadRequest, &syncAnswer{Message: "malformed reconcile request: " + err.Error()})
			return
		}
		missing := k.missing(req.UnitIDs)
		if len(missing) > 0 {
			// The peer may hold units it read from another process's
			// deposits that this index has not read yet: never call them
			// missing before looking (the peer deletes what is missing).
			if _, err := k.adoptDeposits(r.Context()); err != nil {
				writeSync(w, http.StatusServiceUnavailable, &syncAnswer{Message: "key store error"})
				return
			}
			missing = k.missing(missing)
		}
		writeSync(w, http.StatusOK, &syncAnswer{Missing: missing})
	default:
		writeSync(w, http.StatusNotFound, &syncAnswer{Message: "unknown sync operation"})
	}
}

// decodeReserve reads a reserve request: the form the peer writes through
// parseReserveFast, any other through the JSON decoder (unknown members
// refused).
func decodeReserve(r io.Reader) (*reserveRequest, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if req, ok := parseReserveFast(b); ok {
		return req, nil
	}
	return decodeReserveJSON(b)
}

func decodeReserveJSON(b []byte) (*reserveRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var req reserveRequest
	if err := dec.Decode(&req); err != nil {
		return nil, err
	}
	return &req, nil
}

func writeSync(w http.ResponseWriter, status int, a *syncAnswer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(a)
}

// peerReserve applies a reservation decided by the peer KME.
func (k *KME) peerReserve(ctx context.Context, req *reserveRequest) (int, *syncAnswer) {
	if req.Mode != modeSlave && req.Mode != modeDiscard {
		return http.StatusBadRequest, &syncAnswer{Message: "unknown mode"}
	}
	if req.Mode == modeSlave && !k.local[req.Slave] {
		return http.StatusUnauthorized, &syncAnswer{Message: fmt.Sprintf("SAE %q is not attached to KME %q", req.Slave, k.cfg.KMEID)}
	}
	if len(req.Keys) == 0 || len(req.Keys) > k.cfg.MaxKeyPerRequest {
		return http.StatusBadRequest, &syncAnswer{Message: "bad number of keys"}
	}
	if e := checkSyncKeys(req.Keys, k.cfg.MinKeySize, k.cfg.MaxKeySize); e != "" {
		return http.StatusBadRequest, &syncAnswer{Message: e}
	}
	if !validID(req.Master) || !validID(req.Slave) {
		return http.StatusBadRequest, &syncAnswer{Message: "malformed SAE IDs"}
	}
	return k.peerReserveOnce(ctx, req, false)
}

// checkSyncKeys checks the form of a reservation's keys: sizes within the
// limits, 1 to size/8 units each (a unit holds at least 8 bits), a cut
// that is a whole number of bytes shorter than the key, every unit named
// once. It returns "" or what is wrong.
func checkSyncKeys(keys []syncKey, minSize, maxSize int) string {
	seen := map[string]bool{}
	for _, key := range keys {
		if len(key.Units) == 0 || len(key.Units) > key.Size/8 ||
			key.Size < minSize || key.Size > maxSize || key.Size%8 != 0 ||
			key.Cut < 0 || key.Cut%8 != 0 || key.Cut > key.Size {
			return "malformed key " + key.KeyID
		}
		for _, id := range key.Units {
			if seen[id] {
				return "unit listed twice"
			}
			seen[id] = true
		}
	}
	return ""
}

// peerReserveOnce is peerReserve after the request's checks; adopted says
// whether other processes' deposits were just read.
func (k *KME) peerReserveOnce(ctx context.Context, req *reserveRequest, adopted bool) (int, *syncAnswer) {
	k.mu.Lock()
	c, re := k.replan(req.Keys)
	if re != nil && re.bad != "" {
		k.mu.Unlock()
		return http.StatusBadRequest, &syncAnswer{Message: re.bad}
	}
	if re != nil && len(re.missing) > 0 && !adopted {
		// Units this index has not read yet (deposited by another process)
		// are not missing: read them and look again.
		k.mu.Unlock()
		if _, err := k.adoptDeposits(ctx); err != nil {
			k.log.Warn("read other processes' deposits", "err", err)
		}
		return k.peerReserveOnce(ctx, req, true)
	}
	if re != nil {
		k.mu.Unlock()
		return http.StatusConflict, &syncAnswer{Message: "units not available", Missing: re.missing, Busy: re.busy}
	}
	taken := c.srcs()
	var groups []*group
	if req.Mode == modeSlave {
		groups = c.groups(req.Master, req.Slave, req.Keys[0].Size, true)
		for i, g := range groups {
			g.sizeBits = req.Keys[i].Size
		}
	}
	k.mu.Unlock()
	err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := k.applyCarving(ctx, tx, c, groups, req.Mode == modeSlave, false)
		return err
	})
	stale := k.staleUnits(ctx, taken, err)
	if len(stale) > 0 {
		k.pruneSoon(ctx)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(stale) > 0 {
		// Another process on this database (another node's KME under this
		// ID) delivered or reserved them: they leave the index, and the
		// peer learns they are missing here, as after a lost deposit.
		var ids []string
		for _, u := range taken {
			delete(k.inflight, u.id)
			if stale[u.id] {
				ids = append(ids, u.id)
			} else {
				k.pool.insert(u)
			}
		}
		k.log.Warn("units delivered by another process left the index", "units", len(ids))
		return http.StatusConflict, &syncAnswer{Message: "units not available", Missing: ids}
	}
	if err != nil {
		k.putBack(taken)
		k.log.Error("apply peer reservation", "err", err)
		return http.StatusServiceUnavailable, &syncAnswer{Message: "key store error"}
	}
	k.forget(taken)
	for _, t := range c.tails() {
		k.pool.insert(t)
	}
	if req.Mode == modeSlave {
		for _, g := range groups {
			k.addGroup(g)
		}
	}
	return http.StatusOK, &syncAnswer{}
}

// peerRelease returns to the pool reservations the peer made but could not
// complete. Only reservations made by the peer and not being delivered are
// touched.
func (k *KME) peerRelease(ctx context.Context, req *releaseRequest) (int, *syncAnswer) {
	k.mu.Lock()
	var gs []*group
	var us []*unit
	for _, key := range req.Keys {
		g := k.groups[key.KeyID]
		if g == nil || !g.fromPeer || g.busy || g.delivered != 0 {
			continue
		}
		g.busy = true
		gs = append(gs, g)
		us = append(us, g.units...)
	}
	k.mu.Unlock()
	if len(gs) == 0 {
		return http.StatusOK, &syncAnswer{}
	}
	err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for i := 0; i < len(us); i += 500 {
			part := us[i:min(i+500, len(us))]
			args := []any{k.cfg.KMEID}
			for _, u := range part {
				args = append(args, u.seq)
			}
			if _, err := k.w.exec(ctx, tx, k.db.Rebind(`UPDATE kme_keys SET state = 0, group_id = NULL, part = NULL, size_bits = NULL, master_sae = NULL, slave_sae = NULL, reserved_at = NULL
				WHERE kme_id = ? AND state = 1 AND seq IN (`+placeholders(len(part))+`)`), args...); err != nil {
				return err
			}
		}
		return nil
	})
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, g := range gs {
		g.busy = false
		if err == nil {
			k.dropGroup(g)
			for _, u := range g.units {
				k.pool.insert(u)
			}
		}
	}
	if err != nil {
		return http.StatusServiceUnavailable, &syncAnswer{Message: "key store error"}
	}
	return http.StatusOK, &syncAnswer{}
}

// missing returns the IDs among ids that this KME holds neither in its pool
// nor in flight.
func (k *KME) missing(ids []string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, id := range ids {
		if !k.pool.has(id) && k.inflight[id] == nil {
			out = append(out, id)
		}
	}
	return out
}

// Reconcile compares this KME's available units (older than SyncGrace) with
// the peer's and deletes those the peer does not hold, so that both pools
// agree after one side lost a deposit (a crash between the two deposits of
// a block, a full pool on one side). Each KME reconciles its own pool; Serve
// runs it at start-up and every ReconcileEvery. It returns the number of
// units removed.
func (k *KME) Reconcile(ctx context.Context) (int, error) {
	if k.peer == nil {
		return 0, nil
	}
	k.mu.Lock()
	ids := k.pool.snapshot(time.Now().Add(-k.cfg.SyncGrace).UnixNano())
	k.mu.Unlock()
	removed := 0
	const chunk = 20000
	for i := 0; i < len(ids) || i == 0; i += chunk {
		part := ids[i:min(i+chunk, len(ids))]
		if len(part) == 0 {
			break
		}
		ans, err := k.peer.call(ctx, "reconcile", &reconcileRequest{UnitIDs: part})
		if err != nil {
			return removed, fmt.Errorf("kme: reconcile with %s: %w", k.cfg.PeerKMEID, err)
		}
		if len(ans.Missing) == 0 {
			continue
		}
		k.mu.Lock()
		var drop []*unit
		for _, id := range ans.Missing {
			if u, ok := k.pool.remove(id); ok {
				k.inflight[id] = u
				drop = append(drop, u)
			}
		}
		k.mu.Unlock()
		if len(drop) == 0 {
			continue
		}
		err = k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := k.deleteRowsN(ctx, tx, drop, stateAvailable)
			return err
		})
		k.mu.Lock()
		if err != nil {
			k.putBack(drop)
		} else {
			k.forget(drop)
		}
		k.mu.Unlock()
		if err != nil {
			return removed, fmt.Errorf("kme: reconcile: delete units: %w", err)
		}
		removed += len(drop)
	}
	if removed > 0 {
		k.log.Warn("reconciled key pool with peer KME", "removed_units", removed)
	}
	return removed, nil
}
