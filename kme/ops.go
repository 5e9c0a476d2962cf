package kme

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/qshield/qshield/kme/etsi014"
)

// apiError is an ETSI 014 error answer: status and Error body.
type apiError struct {
	status  int
	message string
	details []map[string]any
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.status, e.message) }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, message: fmt.Sprintf(format, args...)}
}

func (e *apiError) with(name string, v any) *apiError {
	e.details = append(e.details, map[string]any{name: v})
	return e
}

// Delivered is a key handed to an SAE.
type Delivered struct {
	ID  string
	Key []byte
}

// slaveKME reports where slave lives: "" (unknown), "local" or "peer".
func (k *KME) slaveSite(slave string) string {
	switch {
	case k.local[slave]:
		return "local"
	case k.peer != nil && (k.remote[slave] || len(k.remote) == 0):
		return "peer"
	}
	return ""
}

func (k *KME) authorizeMaster(master, slave string) (site string, e *apiError) {
	if !k.local[master] {
		return "", errorf(http.StatusUnauthorized, "SAE %q is not attached to KME %q", master, k.cfg.KMEID).with("SAE_ID", master)
	}
	if slave == master {
		return "", errorf(http.StatusBadRequest, "slave_SAE_ID must differ from the calling SAE's ID")
	}
	site = k.slaveSite(slave)
	if site == "" {
		return "", errorf(http.StatusUnauthorized, "slave SAE %q is not reachable from KME %q", slave, k.cfg.KMEID).with("slave_SAE_ID", slave)
	}
	return site, nil
}

// status returns the Status object for master → slave.
func (k *KME) status(master, slave string) (*etsi014.Status, *apiError) {
	site, e := k.authorizeMaster(master, slave)
	if e != nil {
		return nil, e
	}
	target := k.cfg.KMEID
	if site == "peer" {
		target = k.cfg.PeerKMEID
	}
	k.mu.Lock()
	stored := k.stored()
	k.mu.Unlock()
	return &etsi014.Status{
		SourceKMEID: k.cfg.KMEID, TargetKMEID: target,
		MasterSAEID: master, SlaveSAEID: slave,
		KeySize:          k.cfg.KeySizeBits,
		StoredKeyCount:   min(stored, k.cfg.MaxKeyCount),
		MaxKeyCount:      k.cfg.MaxKeyCount,
		MaxKeyPerRequest: k.cfg.MaxKeyPerRequest,
		MaxKeySize:       k.cfg.MaxKeySize,
		MinKeySize:       k.cfg.MinKeySize,
		MaxSAEIDCount:    0,
	}, nil
}

// checkSize validates number and size against the limits (400 on failure).
func (k *KME) checkRequest(number, size int) *apiError {
	switch {
	case number < 1:
		return errorf(http.StatusBadRequest, "number must be at least 1, got %d", number).with("number", number)
	case number > k.cfg.MaxKeyPerRequest:
		return errorf(http.StatusBadRequest, "number %d exceeds max_key_per_request %d", number, k.cfg.MaxKeyPerRequest).with("max_key_per_request", k.cfg.MaxKeyPerRequest)
	case size%8 != 0:
		return errorf(http.StatusBadRequest, "size %d is not a multiple of 8", size).with("size", size)
	case size < k.cfg.MinKeySize:
		return errorf(http.StatusBadRequest, "size %d is below min_key_size %d", size, k.cfg.MinKeySize).with("min_key_size", k.cfg.MinKeySize)
	case size > k.cfg.MaxKeySize:
		return errorf(http.StatusBadRequest, "size %d exceeds max_key_size %d", size, k.cfg.MaxKeySize).with("max_key_size", k.cfg.MaxKeySize)
	}
	return nil
}

func (k *KME) notEnough(number, size, stored int) *apiError {
	e := errorf(http.StatusServiceUnavailable, "not enough key material: %d keys of %d bits requested, %d keys of %d bits stored", number, size, stored, k.cfg.KeySizeBits)
	ls := k.Link()
	switch ls.State {
	case LinkAborted:
		e.message += "; the QKD link is aborted: " + ls.Error
	case LinkDown:
		e.message += "; the QKD link is down"
		if ls.Error != "" {
			e.message += ": " + ls.Error
		}
	}
	return e.with("stored_key_count", stored).with("link_state", ls.State)
}

// take removes from the pool units holding at least bits of key material
// for a new request (nil if the pool holds less). The KME whose ID sorts
// first takes the oldest units and the other the newest (older than
// SyncGrace), so the two never race for the same units until the pool is
// almost empty.
func (k *KME) take(bits int) []*unit {
	var us []*unit
	if k.low {
		us = k.pool.takeFront(bits)
	} else if us = k.pool.takeBack(bits, time.Now().Add(-k.cfg.SyncGrace).UnixNano()); us == nil {
		// Too few settled units: use the oldest ones (a collision with the
		// peer's choice only makes one of the two requests retry).
		us = k.pool.takeFront(bits)
	}
	for _, u := range us {
		k.inflight[u.id] = u
	}
	return us
}

// putBack returns in-flight units to the pool (k.mu held).
func (k *KME) putBack(us []*unit) {
	for _, u := range us {
		delete(k.inflight, u.id)
		k.pool.insert(u)
	}
}

func (k *KME) forget(us []*unit) {
	for _, u := range us {
		delete(k.inflight, u.id)
	}
}

// encKeys serves Get key: number keys of size bits for master → slave.
func (k *KME) encKeys(ctx context.Context, master, slave string, number, size int) ([]Delivered, *apiError) {
	site, e := k.authorizeMaster(master, slave)
	if e != nil {
		return nil, e
	}
	if e := k.checkRequest(number, size); e != nil {
		return nil, e
	}
	for attempt := 0; ; attempt++ {
		out, e, retry := k.tryEncKeys(ctx, master, slave, site, number, size)
		if !retry || attempt >= 2 {
			return out, e
		}
	}
}

func (k *KME) tryEncKeys(ctx context.Context, master, slave, site string, number, size int) ([]Delivered, *apiError, bool) {
	k.mu.Lock()
	us := k.take(number * size)
	stored := k.stored()
	k.mu.Unlock()
	if us == nil {
		// Another process (the node that runs the QKD link) may have
		// deposited since: take its units into this index and try again.
		if n, err := k.adoptDeposits(ctx); err != nil {
			k.log.Warn("read other processes' deposits", "err", err)
		} else if n > 0 {
			k.mu.Lock()
			us = k.take(number * size)
			stored = k.stored()
			k.mu.Unlock()
		}
	}
	if us == nil {
		return nil, k.notEnough(number, size, stored), false
	}
	c, rest := plan(us, number, size)
	if c == nil || len(rest) > 0 {
		// take returned less or more than the request needs: never
		// happens, as take stops at the first unit that completes it.
		k.mu.Lock()
		k.putBack(us)
		k.mu.Unlock()
		return nil, errorf(http.StatusServiceUnavailable, "key store error at KME %s", k.cfg.KMEID), false
	}
	groups := c.groups(master, slave, size, false)
	// 1. The peer KME reserves the same units first (or discards them when
	// both SAEs are local), so the two pools never disagree.
	if k.peer != nil {
		mode := modeSlave
		if site == "local" {
			mode = modeDiscard
		}
		err := k.peer.reserve(ctx, &reserveRequest{Master: master, Slave: slave, Mode: mode, Keys: c.syncKeys(size)})
		if err != nil {
			var pe *peerError
			if errors.As(err, &pe) && pe.status == http.StatusConflict {
				// The peer lacks some units: drop those that are old enough to
				// have reached it, return the others and try again.
				k.dropMissing(ctx, us, pe.missing)
				if len(pe.missing) > 0 {
					k.pruneSoon(ctx) // this index may be as stale as the peer's
				}
				return nil, errorf(http.StatusServiceUnavailable, "key pools of %s and %s are out of step; retry", k.cfg.KMEID, k.cfg.PeerKMEID), true
			}
			if errors.As(err, &pe) && pe.status == http.StatusUnauthorized {
				k.mu.Lock()
				k.putBack(us)
				k.mu.Unlock()
				return nil, errorf(http.StatusUnauthorized, "slave SAE %q is not attached to KME %q", slave, k.cfg.PeerKMEID).with("slave_SAE_ID", slave), false
			}
			// The peer may have applied the reservation even though its answer
			// was lost: ask it to release it before the units are offered again.
			if mode == modeSlave && pe == nil {
				k.releaseAtPeer(c.syncKeys(size))
			}
			k.mu.Lock()
			k.putBack(us)
			k.mu.Unlock()
			k.log.Warn("peer KME reservation failed", "err", err)
			return nil, errorf(http.StatusServiceUnavailable, "peer KME %s unavailable; retry later", k.cfg.PeerKMEID), false
		}
	}
	// 2. Take the key bytes: delete the units (the slave's copy is at the
	// peer) or, when the slave is local, keep them reserved for it.
	out := make([]Delivered, number)
	err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		keys, err := k.applyCarving(ctx, tx, c, groups, site == "local", true)
		if err != nil {
			return err
		}
		for i, g := range groups {
			out[i] = Delivered{ID: g.id, Key: keys[i]}
		}
		return nil
	})
	if err != nil {
		k.log.Error("deliver keys to master", "err", err)
		if k.peer != nil && site == "peer" {
			k.releaseAtPeer(c.syncKeys(size))
		}
		var ce *corruptError
		corrupt := errors.As(err, &ce)
		stale := k.staleUnits(ctx, us, err)
		k.mu.Lock()
		if site == "peer" || k.peer == nil {
			for _, u := range us {
				if corrupt && u.id == ce.unit {
					continue // quarantined below, never offered again
				}
				delete(k.inflight, u.id)
				if !stale[u.id] {
					k.pool.insert(u)
				}
			}
		} else {
			k.forget(us) // discarded at the peer: unusable here
		}
		k.mu.Unlock()
		if len(stale) > 0 {
			k.log.Warn("units delivered by another process left the index", "units", len(stale))
			k.pruneSoon(ctx)
			return nil, errorf(http.StatusServiceUnavailable, "key pool of %s changed; retry", k.cfg.KMEID), true
		}
		if corrupt {
			k.quarantine(ctx, us, ce.unit)
			return nil, errorf(http.StatusServiceUnavailable, "key store error at KME %s", k.cfg.KMEID), true
		}
		return nil, errorf(http.StatusServiceUnavailable, "key store error at KME %s", k.cfg.KMEID), false
	}
	k.mu.Lock()
	k.forget(us)
	for _, t := range c.tails() {
		k.pool.insert(t)
	}
	if site == "local" {
		for _, g := range groups {
			k.addGroup(g)
		}
	}
	k.mu.Unlock()
	k.deliveredMaster.Add(int64(number))
	return out, nil, false
}

// quarantine deletes a unit whose stored ciphertext failed authentication
// (tampering or corruption), so that it is never offered again; the peer's
// copy is removed by the next reconciliation.
func (k *KME) quarantine(ctx context.Context, us []*unit, id string) {
	for _, u := range us {
		if u.id != id {
			continue
		}
		k.log.Error("key unit failed authentication: removed from the pool", "unit", id)
		err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := k.deleteRowsN(ctx, tx, []*unit{u}, stateAvailable)
			return err
		})
		k.mu.Lock()
		delete(k.inflight, id)
		k.mu.Unlock()
		if err != nil {
			k.log.Error("quarantine unit", "unit", id, "err", err)
		}
	}
}

// compose concatenates unit plaintexts and cuts them to size bits.
func compose(units [][]byte, size int) []byte {
	out := make([]byte, 0, size/8+32)
	for _, u := range units {
		out = append(out, u...)
		clear(u)
	}
	for i := size / 8; i < len(out); i++ {
		out[i] = 0
	}
	return out[:size/8]
}

// releaseAtPeer asks the peer, in the background, to put back a reservation
// whose keys never reached the master SAE.
func (k *KME) releaseAtPeer(keys []syncKey) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.peer.release(ctx, &releaseRequest{Keys: keys}); err != nil {
			k.log.Warn("release reservation at peer KME", "err", err)
		}
	}()
}

// dropMissing deletes from this pool the units the peer reported missing
// that are older than SyncGrace, and returns the rest to the pool.
func (k *KME) dropMissing(ctx context.Context, us []*unit, missing []string) {
	miss := make(map[string]bool, len(missing))
	for _, id := range missing {
		miss[id] = true
	}
	cutoff := time.Now().Add(-k.cfg.SyncGrace).UnixNano()
	var drop, keep []*unit
	for _, u := range us {
		if miss[u.id] && u.created <= cutoff {
			drop = append(drop, u)
		} else {
			keep = append(keep, u)
		}
	}
	k.mu.Lock()
	k.putBack(keep)
	k.mu.Unlock()
	if len(drop) == 0 {
		return
	}
	// A unit another process on this database cut (or delivered) is gone
	// here too: it leaves the index, its remainder takes its place, and
	// nothing is deleted for it.
	if stale := k.staleUnits(ctx, drop, errStateChanged); len(stale) > 0 {
		var still []*unit
		k.mu.Lock()
		for _, u := range drop {
			if stale[u.id] {
				delete(k.inflight, u.id)
			} else {
				still = append(still, u)
			}
		}
		k.mu.Unlock()
		drop = still
		if len(drop) == 0 {
			return
		}
	}
	err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
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
	if err == nil {
		k.log.Warn("dropped units the peer KME does not hold", "units", len(drop))
	}
}

// decKeys serves Get key with key IDs: the slave SAE fetches ids that master
// obtained for it. All or nothing.
func (k *KME) decKeys(ctx context.Context, slave, master string, ids []string) ([]Delivered, *apiError) {
	if !k.local[slave] {
		return nil, errorf(http.StatusUnauthorized, "SAE %q is not attached to KME %q", slave, k.cfg.KMEID).with("SAE_ID", slave)
	}
	if len(ids) > k.cfg.MaxKeyPerRequest {
		return nil, errorf(http.StatusBadRequest, "%d key IDs exceed max_key_per_request %d", len(ids), k.cfg.MaxKeyPerRequest).with("max_key_per_request", k.cfg.MaxKeyPerRequest)
	}
	// Keys reserved by another process on this database (another node's
	// KME under the same ID) are not in this index: read them from the
	// database, which is the authority.
	k.mu.Lock()
	var unknown []string
	for _, id := range ids {
		if k.groups[id] == nil {
			unknown = append(unknown, id)
		}
	}
	k.mu.Unlock()
	if len(unknown) > 0 {
		if err := k.adoptGroups(ctx, unknown); err != nil {
			k.log.Error("read reserved keys", "err", err)
			return nil, errorf(http.StatusServiceUnavailable, "key store error at KME %s", k.cfg.KMEID)
		}
	}
	now := time.Now().UnixNano()
	k.mu.Lock()
	gs := make([]*group, len(ids))
	var unauthorized, notFound []string
	for i, id := range ids {
		g := k.groups[id]
		switch {
		case g == nil || g.busy || (g.delivered != 0 && now-g.delivered > int64(k.cfg.RedeliverWithin)):
			notFound = append(notFound, id)
		case g.master != master || g.slave != slave:
			unauthorized = append(unauthorized, id)
		default:
			gs[i] = g
		}
	}
	if len(unauthorized) > 0 {
		k.mu.Unlock()
		return nil, errorf(http.StatusUnauthorized, "key IDs not shared between master SAE %q and SAE %q", master, slave).with("key_IDs", unauthorized)
	}
	if len(notFound) > 0 {
		k.mu.Unlock()
		return nil, errorf(http.StatusBadRequest, "key IDs not found (unknown or already delivered)").with("key_IDs", notFound)
	}
	var us []*unit
	for _, g := range gs {
		g.busy = true
		us = append(us, g.units...)
	}
	k.mu.Unlock()

	out := make([]Delivered, len(gs))
	fresh := 0
	err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if k.cfg.RedeliverWithin <= 0 {
			plain, err := k.takeUnits(ctx, tx, us, stateReserved, master, slave)
			if err != nil {
				return err
			}
			j := 0
			for i, g := range gs {
				out[i] = Delivered{ID: g.id, Key: compose(plain[j:j+len(g.units)], g.sizeBits)}
				j += len(g.units)
			}
			fresh = len(gs)
			return nil
		}
		// Kept for redelivery: first deliveries move to state delivered,
		// repeated ones read the delivered rows.
		var first, again []*unit
		for _, g := range gs {
			if g.delivered == 0 {
				first = append(first, g.units...)
			} else {
				again = append(again, g.units...)
			}
		}
		var pFirst, pAgain [][]byte
		var err error
		if len(first) > 0 {
			if pFirst, err = k.readUnits(ctx, tx, first, stateReserved, master, slave); err != nil {
				return err
			}
			if err := k.markDelivered(ctx, tx, first, now); err != nil {
				return err
			}
		}
		if len(again) > 0 {
			if pAgain, err = k.readUnits(ctx, tx, again, stateDelivered, master, slave); err != nil {
				return err
			}
		}
		fresh = 0
		for i, g := range gs {
			n := len(g.units)
			if g.delivered == 0 {
				out[i] = Delivered{ID: g.id, Key: compose(pFirst[:n], g.sizeBits)}
				pFirst = pFirst[n:]
				fresh++
			} else {
				out[i] = Delivered{ID: g.id, Key: compose(pAgain[:n], g.sizeBits)}
				pAgain = pAgain[n:]
			}
		}
		return nil
	})
	k.mu.Lock()
	for _, g := range gs {
		g.busy = false
		switch {
		case err == nil && k.cfg.RedeliverWithin > 0:
			if g.delivered == 0 {
				g.delivered = now
			}
		case err == nil || errors.Is(err, errStateChanged):
			k.dropGroup(g)
		}
	}
	k.mu.Unlock()
	if errors.Is(err, errStateChanged) {
		// Another process delivered (or released) some of them: the index
		// was stale. Keep what the database still holds and answer for the
		// rest as for any delivered key.
		if aerr := k.adoptGroups(ctx, ids); aerr != nil {
			k.log.Error("read reserved keys", "err", aerr)
		}
		k.mu.Lock()
		var gone []string
		for _, id := range ids {
			if k.groups[id] == nil {
				gone = append(gone, id)
			}
		}
		k.mu.Unlock()
		if len(gone) > 0 {
			return nil, errorf(http.StatusBadRequest, "key IDs not found (unknown or already delivered)").with("key_IDs", gone)
		}
	}
	if err != nil {
		k.log.Error("deliver keys to slave", "err", err)
		return nil, errorf(http.StatusServiceUnavailable, "key store error at KME %s", k.cfg.KMEID)
	}
	k.deliveredSlave.Add(int64(fresh))
	return out, nil
}

// markDelivered moves the reserved units us to state delivered at now.
func (k *KME) markDelivered(ctx context.Context, tx *sql.Tx, us []*unit, now int64) error {
	for i := 0; i < len(us); i += 500 {
		part := us[i:min(i+500, len(us))]
		args := []any{stateDelivered, now, k.cfg.KMEID, stateReserved}
		for _, u := range part {
			args = append(args, u.seq)
		}
		res, err := k.w.exec(ctx, tx, k.db.Rebind(`UPDATE kme_keys SET state = ?, reserved_at = ? WHERE kme_id = ? AND state = ? AND seq IN (`+placeholders(len(part))+`)`), args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || int(n) != len(part) {
			return fmt.Errorf("%w: marked %d of %d units delivered", errStateChanged, n, len(part))
		}
	}
	return nil
}

// SweepDelivered deletes the keys delivered to their slave SAE longer than
// RedeliverWithin ago (with RedeliverWithin set; Serve runs it) and returns
// how many units it deleted. Nodes sharing the database may all sweep.
func (k *KME) SweepDelivered(ctx context.Context) (int, error) {
	if k.cfg.RedeliverWithin <= 0 {
		return 0, nil
	}
	cutoff := time.Now().Add(-k.cfg.RedeliverWithin).UnixNano()
	var n int64
	err := k.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := k.w.exec(ctx, tx, k.db.Rebind(`DELETE FROM kme_keys WHERE kme_id = ? AND state = ? AND reserved_at < ?`), k.cfg.KMEID, stateDelivered, cutoff)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("kme: sweep delivered keys of %s: %w", k.cfg.KMEID, err)
	}
	k.mu.Lock()
	for _, g := range k.groups {
		if g.delivered != 0 && g.delivered < cutoff && !g.busy {
			k.dropGroup(g)
		}
	}
	k.mu.Unlock()
	return int(n), nil
}

// staleUnits returns, when err says the database did not hold some of us in
// the state the index expected (errStateChanged), the IDs of those no longer
// available there: another process on this database (another node's KME
// under the same ID) delivered, reserved or dropped them, and they must
// leave this index instead of going back to the pool, where they would fail
// every later request. Nil for any other error or if the check fails.
func (k *KME) staleUnits(ctx context.Context, us []*unit, err error) map[string]bool {
	if !errors.Is(err, errStateChanged) || len(us) == 0 {
		return nil
	}
	avail := make(map[int64]*unit, len(us))
	for i := 0; i < len(us); i += 500 {
		part := us[i:min(i+500, len(us))]
		args := []any{k.cfg.KMEID, stateAvailable}
		for _, u := range part {
			args = append(args, u.seq)
		}
		rows, qerr := k.db.QueryContext(ctx, k.db.Rebind(`SELECT seq, key_id, created_at, COALESCE(bits, 0) FROM kme_keys WHERE kme_id = ? AND state = ? AND seq IN (`+placeholders(len(part))+`)`), args...)
		if qerr != nil {
			k.log.Error("check key units against the database", "err", qerr)
			return nil
		}
		for rows.Next() {
			a := &unit{}
			if serr := rows.Scan(&a.seq, &a.id, &a.created, &a.bits); serr != nil {
				rows.Close()
				return nil
			}
			avail[a.seq] = a
		}
		rerr := rows.Err()
		rows.Close()
		if rerr != nil {
			return nil
		}
	}
	stale := map[string]bool{}
	k.mu.Lock()
	for _, u := range us {
		a := avail[u.seq]
		if a == nil || a.id != u.id {
			stale[u.id] = true
		}
		// Another process cut the unit: its remainder, in the same row,
		// takes its place in this index.
		if a != nil && a.id != u.id && a.bits > 0 && !k.pool.has(a.id) && k.inflight[a.id] == nil && !k.unitReserved(a.id) {
			k.pool.insert(a)
		}
	}
	k.mu.Unlock()
	return stale
}

// Prune removes from the index the available units the database no longer
// holds as available: units another process on this database (another
// node's KME under the same ID) delivered, reserved or dropped. Several
// nodes on one database each keep an index, and a node that started while
// others ran loaded their units too; without pruning, those units stayed at
// the front of its pool and every request that picked one failed. Prune
// never deletes a row, so it cannot lose key material. It runs when a
// request meets such a unit (at most once per second) and before each
// reconciliation; it returns the number of units removed.
func (k *KME) Prune(ctx context.Context) (int, error) {
	return k.prune(ctx, 0)
}

func (k *KME) prune(ctx context.Context, minInterval time.Duration) (int, error) {
	k.pruneMu.Lock()
	defer k.pruneMu.Unlock()
	if minInterval > 0 && time.Since(k.lastPrune) < minInterval {
		return 0, nil
	}
	k.lastPrune = time.Now()
	// Candidates are taken before the query: a unit deposited meanwhile is
	// in the database before it enters the index, so it is never judged on
	// an older read.
	k.mu.Lock()
	cands := k.pool.all()
	k.mu.Unlock()
	if len(cands) == 0 {
		return 0, nil
	}
	rows, err := k.db.QueryContext(ctx, k.db.Rebind(`SELECT seq, key_id, created_at, COALESCE(bits, 0) FROM kme_keys WHERE kme_id = ? AND state = ?`), k.cfg.KMEID, stateAvailable)
	if err != nil {
		return 0, fmt.Errorf("kme: prune the index of %s: %w", k.cfg.KMEID, err)
	}
	avail := make(map[int64]*unit, len(cands))
	for rows.Next() {
		u := &unit{}
		if err := rows.Scan(&u.seq, &u.id, &u.created, &u.bits); err != nil {
			rows.Close()
			return 0, fmt.Errorf("kme: prune the index of %s: %w", k.cfg.KMEID, err)
		}
		avail[u.seq] = u
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("kme: prune the index of %s: %w", k.cfg.KMEID, err)
	}
	n := 0
	k.mu.Lock()
	for _, u := range cands {
		now := avail[u.seq]
		if (now == nil || now.id != u.id) && k.pool.has(u.id) {
			k.pool.remove(u.id)
			n++
			// Another process cut the unit: its remainder, in the same
			// row, takes its place.
			if now != nil && now.bits > 0 && !k.pool.has(now.id) && k.inflight[now.id] == nil && !k.unitReserved(now.id) {
				k.pool.insert(now)
			}
		}
	}
	k.mu.Unlock()
	if n > 0 {
		k.log.Info("units delivered by another process left the index", "units", n)
	}
	return n, nil
}

// adoptDeposits adds to the index the available units other processes on
// this database deposited under this KME's ID since the last read (the
// node that runs the QKD link when it is a singleton), and returns how many
// it added. Sequence numbers are handed out under a per-KME lock held to
// commit, so reading past the highest one seen misses none. It runs only
// when the pool cannot serve a request or the peer asks for units this
// index lacks, so nodes with links of their own keep to their own units.
func (k *KME) adoptDeposits(ctx context.Context) (int, error) {
	k.adoptMu.Lock()
	defer k.adoptMu.Unlock()
	rows, err := k.db.QueryContext(ctx, k.db.Rebind(`SELECT seq, key_id, created_at, COALESCE(bits, 0) FROM kme_keys WHERE kme_id = ? AND state = ? AND seq > ? ORDER BY seq LIMIT 100000`),
		k.cfg.KMEID, stateAvailable, k.lastAdopted)
	if err != nil {
		return 0, fmt.Errorf("kme: read deposits of %s: %w", k.cfg.KMEID, err)
	}
	var found []*unit
	for rows.Next() {
		u := &unit{}
		if err := rows.Scan(&u.seq, &u.id, &u.created, &u.bits); err != nil {
			rows.Close()
			return 0, fmt.Errorf("kme: read deposits of %s: %w", k.cfg.KMEID, err)
		}
		found = append(found, u)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return 0, fmt.Errorf("kme: read deposits of %s: %w", k.cfg.KMEID, err)
	}
	n := 0
	k.mu.Lock()
	for _, u := range found {
		k.lastAdopted = max(k.lastAdopted, u.seq)
		if u.bits <= 0 || k.pool.has(u.id) || k.inflight[u.id] != nil || k.unitReserved(u.id) || k.stored() >= k.cfg.MaxKeyCount {
			continue
		}
		k.pool.insert(u)
		n++
	}
	k.mu.Unlock()
	return n, nil
}

// pruneSoon is prune after a request met a stale unit, at most once a second.
func (k *KME) pruneSoon(ctx context.Context) {
	if _, err := k.prune(ctx, time.Second); err != nil {
		k.log.Warn("prune the key index", "err", err)
	}
}

// adoptGroups reads the keys among ids that the database holds reserved at
// this KME and that the index lacks (reserved by another process under the
// same KME ID), and adds them to the index; their units leave the pool if a
// stale index still offered them.
func (k *KME) adoptGroups(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	args := []any{k.cfg.KMEID, stateReserved, stateDelivered}
	for _, id := range ids {
		args = append(args, id)
	}
	rows, err := k.db.QueryContext(ctx, k.db.Rebind(`SELECT key_id, seq, group_id, part, size_bits, master_sae, slave_sae, created_at, state, reserved_at, COALESCE(bits, 0)
		FROM kme_keys WHERE kme_id = ? AND state IN (?, ?) AND group_id IN (`+placeholders(len(ids))+`) ORDER BY group_id, part`), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	found := map[string]*group{}
	var order []*group
	for rows.Next() {
		var (
			id, gid, master, slave string
			seq, created, part     int64
			size, state, bits      int
			reservedAt             sql.NullInt64
		)
		if err := rows.Scan(&id, &seq, &gid, &part, &size, &master, &slave, &created, &state, &reservedAt, &bits); err != nil {
			return err
		}
		g := found[gid]
		if g == nil {
			g = &group{id: gid, master: master, slave: slave, sizeBits: size, fromPeer: !k.local[master]}
			if state == stateDelivered {
				g.delivered = max(reservedAt.Int64, 1)
			}
			found[gid] = g
			order = append(order, g)
		}
		if int(part) != len(g.units) || (state == stateDelivered) != (g.delivered != 0) {
			g.units = nil // parts missing: a key being delivered right now
			g.sizeBits = -1
			continue
		}
		g.units = append(g.units, &unit{id: id, seq: seq, created: created, bits: bits})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, g := range order {
		have := 0
		for _, u := range g.units {
			have += u.bits
		}
		if g.sizeBits <= 0 || len(g.units) == 0 || have != g.sizeBits || g.units[0].id != g.id || k.groups[g.id] != nil {
			continue
		}
		clash := false
		for _, u := range g.units {
			if k.inflight[u.id] != nil || k.reservedUnits[u.id] != nil {
				clash = true
			}
		}
		if clash {
			continue
		}
		for _, u := range g.units {
			k.pool.remove(u.id)
		}
		k.addGroup(g)
	}
	return nil
}

// errStateChanged means the database did not hold a unit in the expected
// state: the in-memory index was wrong (or another process touched the
// pool), and nothing is delivered.
var errStateChanged = errors.New("kme: key unit not in the expected state")

// readUnits returns the decrypted bytes of us, in order, checking their state
// (and, for reserved units, their SAE pair).
func (k *KME) readUnits(ctx context.Context, tx *sql.Tx, us []*unit, state int, master, slave string) ([][]byte, error) {
	q := `SELECT seq, key_id, key_enc FROM kme_keys WHERE kme_id = ? AND state = ?`
	args := []any{k.cfg.KMEID, state}
	if state != stateAvailable {
		q += ` AND master_sae = ? AND slave_sae = ?`
		args = append(args, master, slave)
	}
	q += ` AND seq IN (` + placeholders(len(us)) + `)`
	for _, u := range us {
		args = append(args, u.seq)
	}
	if k.db.Dialect.String() == "postgres" {
		q += ` FOR UPDATE`
	}
	rows, err := k.w.query(ctx, tx, k.db.Rebind(q), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	bySeq := make(map[int64]unitRow, len(us))
	if err := scanUnitRows(rows, bySeq); err != nil {
		return nil, err
	}
	return k.openUnits(us, bySeq)
}

// unitRow is the stored ID and sealed bytes of a unit read back by seq.
type unitRow struct {
	id  string
	enc []byte
}

// scanUnitRows adds the rows of rows (seq, key_id, key_enc) to bySeq.
func scanUnitRows(rows *sql.Rows, bySeq map[int64]unitRow) error {
	for rows.Next() {
		var seq int64
		var r unitRow
		if err := rows.Scan(&seq, &r.id, &r.enc); err != nil {
			return err
		}
		bySeq[seq] = r
	}
	return rows.Err()
}

// openUnits returns the decrypted bytes of us, in order, from their rows in
// bySeq. A unit whose row is missing or holds another unit ID is
// errStateChanged; the unit ID is bound into the ciphertext, so a row moved
// or swapped in the database fails to open.
func (k *KME) openUnits(us []*unit, bySeq map[int64]unitRow) ([][]byte, error) {
	out := make([][]byte, len(us))
	for i, u := range us {
		r, ok := bySeq[u.seq]
		if !ok || r.id != u.id {
			return nil, fmt.Errorf("%w: %s", errStateChanged, u.id)
		}
		p, err := k.seal.open(k.cfg.KMEID, u.id, r.enc)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// takeUnits deletes us (which must all be in state, and for reserved units
// belong to master → slave) and returns their decrypted bytes in order, in
// one statement (DELETE … RETURNING). Any mismatch is an error, and the
// caller's transaction then rolls the deletion back.
func (k *KME) takeUnits(ctx context.Context, tx *sql.Tx, us []*unit, state int, master, slave string) ([][]byte, error) {
	bySeq := make(map[int64]unitRow, len(us))
	for i := 0; i < len(us); i += 500 {
		part := us[i:min(i+500, len(us))]
		q := `DELETE FROM kme_keys WHERE kme_id = ? AND state = ?`
		args := []any{k.cfg.KMEID, state}
		if state == stateReserved {
			q += ` AND master_sae = ? AND slave_sae = ?`
			args = append(args, master, slave)
		}
		q += ` AND seq IN (` + placeholders(len(part)) + `) RETURNING seq, key_id, key_enc`
		for _, u := range part {
			args = append(args, u.seq)
		}
		rows, err := k.w.query(ctx, tx, k.db.Rebind(q), args...)
		if err != nil {
			return nil, err
		}
		err = scanUnitRows(rows, bySeq)
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	out, err := k.openUnits(us, bySeq)
	if err != nil {
		return nil, err
	}
	if len(bySeq) != len(us) {
		return nil, fmt.Errorf("%w: deleted %d rows for %d units", errStateChanged, len(bySeq), len(us))
	}
	return out, nil
}

// deleteRows deletes us, which must all be in state.
func (k *KME) deleteRows(ctx context.Context, tx *sql.Tx, us []*unit, state int) error {
	n, err := k.deleteRowsN(ctx, tx, us, state)
	if err != nil {
		return err
	}
	if n != len(us) {
		return fmt.Errorf("%w: deleted %d of %d units", errStateChanged, n, len(us))
	}
	return nil
}

func (k *KME) deleteRowsN(ctx context.Context, tx *sql.Tx, us []*unit, state int) (int, error) {
	total := 0
	for i := 0; i < len(us); i += 500 {
		part := us[i:min(i+500, len(us))]
		args := []any{k.cfg.KMEID, state}
		for _, u := range part {
			args = append(args, u.seq)
		}
		for _, u := range part {
			args = append(args, u.id)
		}
		// The key ID too: a row cut by another process keeps its seq
		// under its remainder's ID, which this deletion must not touch.
		res, err := k.w.exec(ctx, tx, k.db.Rebind(`DELETE FROM kme_keys WHERE kme_id = ? AND state = ? AND seq IN (`+placeholders(len(part))+`) AND key_id IN (`+placeholders(len(part))+`)`), args...)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += int(n)
	}
	return total, nil
}

// reserveRows marks the units of groups reserved for their SAE pair, except
// those in filed (pieces cut from a unit, inserted already reserved).
func (k *KME) reserveRows(ctx context.Context, tx *sql.Tx, groups []*group, filed map[*unit]bool) error {
	now := time.Now().UnixNano()
	// Single-unit groups (the common case) in one statement per pair.
	var single []*group
	for _, g := range groups {
		if len(g.units) == 1 {
			if !filed[g.units[0]] {
				single = append(single, g)
			}
			continue
		}
		for part, u := range g.units {
			if filed[u] {
				continue
			}
			res, err := k.w.exec(ctx, tx, k.db.Rebind(`UPDATE kme_keys SET state = 1, group_id = ?, part = ?, size_bits = ?, master_sae = ?, slave_sae = ?, reserved_at = ?
				WHERE kme_id = ? AND seq = ? AND key_id = ? AND state = 0`), g.id, part, g.sizeBits, g.master, g.slave, now, k.cfg.KMEID, u.seq, u.id)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return fmt.Errorf("%w: %s", errStateChanged, u.id)
			}
		}
	}
	for i := 0; i < len(single); i += 500 {
		part := single[i:min(i+500, len(single))]
		g0 := part[0]
		args := []any{g0.sizeBits, g0.master, g0.slave, now, k.cfg.KMEID}
		for _, g := range part {
			args = append(args, g.units[0].seq)
		}
		res, err := k.w.exec(ctx, tx, k.db.Rebind(`UPDATE kme_keys SET state = 1, group_id = key_id, part = 0, size_bits = ?, master_sae = ?, slave_sae = ?, reserved_at = ?
			WHERE kme_id = ? AND state = 0 AND seq IN (`+placeholders(len(part))+`)`), args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || int(n) != len(part) {
			return fmt.Errorf("%w: reserved %d of %d units", errStateChanged, n, len(part))
		}
	}
	return nil
}
