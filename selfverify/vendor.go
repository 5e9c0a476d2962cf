//go:build !wasm

package selfverify

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
)

// VendorConfig configures a vendor V.
type VendorConfig struct {
	// Operator is where V reserves spend and deposits (in-process or HTTP).
	Operator OperatorAPI
	// Catalog is V's goods (the seed's GI): a payment must name an item and
	// its exact price.
	Catalog []Item
	// Goods returns what V delivers for an item (default: a text receipt).
	Goods func(item Item, ref string) string
	// MaxClockSkew bounds payment timestamps (default 2 min).
	MaxClockSkew time.Duration
	// MaxSkip is how far a payment's sequence number may run ahead of V's
	// (resynchronisation after lost messages; default 1000).
	MaxSkip int64
	Now     func() time.Time
	Log     *slog.Logger
}

// Vendor is the vendor V: it accepts anonymous payments, reserves their
// amounts online at N, and deposits them signed with d_V.
type Vendor struct {
	db      *sqldb.DB
	cfg     VendorConfig
	cred    *Credentials
	kvn     []byte
	catalog map[string]Item
	hot     *committer
}

// Close stops the vendor's group-commit goroutine (SQLite); it does not close
// the database.
func (v *Vendor) Close() error {
	if v.hot != nil {
		v.hot.close()
	}
	return nil
}

func (v *Vendor) write(ctx context.Context, fn func(*sql.Tx) error) error {
	if v.hot == nil {
		return v.db.InTx(ctx, fn)
	}
	return v.hot.run(ctx, fn)
}

// SaveVendorCredentials stores a vendor's registered key material in its own
// database (component "selfverify-vendor"). The private key is stored as hex;
// protect the database file accordingly.
func SaveVendorCredentials(ctx context.Context, db *sqldb.DB, cred *Credentials) error {
	if cred.Role != RoleVendor {
		return invalid("credentials of %s are not a vendor's", cred.ID)
	}
	if err := db.Migrate(ctx, "selfverify-vendor", vendorMigrations); err != nil {
		return fmt.Errorf("selfverify: %w", err)
	}
	_, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO sv_vendor_identity (id, curve, d, p, q_n, currency, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		cred.ID, cred.Curve().Name(), hex.EncodeToString(cred.Key.Bytes()), hex.EncodeToString(cred.P.Bytes()),
		hex.EncodeToString(cred.QN.Bytes()), cred.Currency, ms(time.Now()))
	if err != nil {
		return fmt.Errorf("selfverify: save vendor %s: %w", cred.ID, err)
	}
	return nil
}

// LoadVendorCredentials reads credentials stored by SaveVendorCredentials.
func LoadVendorCredentials(ctx context.Context, db *sqldb.DB, id string) (*Credentials, error) {
	if err := db.Migrate(ctx, "selfverify-vendor", vendorMigrations); err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	var curveName, dHex, pHex, qHex, cur string
	err := db.QueryRowContext(ctx, db.Rebind(`SELECT curve, d, p, q_n, currency FROM sv_vendor_identity WHERE id = ?`), id).Scan(&curveName, &dHex, &pHex, &qHex, &cur)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: no vendor credentials for %s in this database", ErrNotRegistered, id)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: load vendor %s: %w", id, err)
	}
	c, err := ecqv.CurveByName(curveName)
	if err != nil {
		return nil, err
	}
	d, _ := hex.DecodeString(dHex)
	p, _ := hex.DecodeString(pHex)
	q, _ := hex.DecodeString(qHex)
	cred := &Credentials{ID: id, Role: RoleVendor, Currency: cur}
	if cred.Key, err = c.NewPrivateKey(d); err != nil {
		return nil, err
	}
	if cred.P, err = c.ParsePoint(p); err != nil {
		return nil, err
	}
	if cred.QN, err = c.ParsePublicKey(q); err != nil {
		return nil, err
	}
	return cred, nil
}

// NewVendor returns the vendor service for registered credentials.
func NewVendor(ctx context.Context, db *sqldb.DB, cred *Credentials, cfg VendorConfig) (*Vendor, error) {
	if db == nil || cred == nil || cfg.Operator == nil {
		return nil, errors.New("selfverify: vendor needs a database, credentials and an operator")
	}
	if err := db.Migrate(ctx, "selfverify-vendor", vendorMigrations); err != nil {
		return nil, fmt.Errorf("selfverify: %w", err)
	}
	// Self-verification: our own reconstructed key must be d_V·G.
	q, err := ecqv.Reconstruct(cred.Curve(), cred.ID, cred.P, cred.QN)
	if err != nil || !q.Equal(cred.Key.Public()) {
		return nil, fmt.Errorf("selfverify: vendor %s: %w", cred.ID, ecqv.ErrInvalidResponse)
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = 2 * time.Minute
	}
	if cfg.MaxSkip <= 0 {
		cfg.MaxSkip = 1000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Goods == nil {
		cfg.Goods = func(it Item, ref string) string { return "goods:" + it.ID + ":" + ref }
	}
	cat := make(map[string]Item, len(cfg.Catalog))
	for _, it := range cfg.Catalog {
		if err := it.validate(); err != nil {
			return nil, fmt.Errorf("selfverify: catalogue: %w", err)
		}
		cat[it.ID] = it
	}
	z, err := cred.Key.ECDH(cred.QN)
	if err != nil {
		return nil, err
	}
	kvn, err := deriveKVN(cred.Curve(), z, cred.ID)
	if err != nil {
		return nil, err
	}
	return &Vendor{db: db, cfg: cfg, cred: cred, kvn: kvn, catalog: cat, hot: newCommitter(db)}, nil
}

// ID is ID_V.
func (v *Vendor) ID() string { return v.cred.ID }

// Info is what V publishes: ID_V, P_V, Q_N, currency and catalogue.
func (v *Vendor) Info() *VendorInfo {
	cat := make([]Item, 0, len(v.cfg.Catalog))
	cat = append(cat, v.cfg.Catalog...)
	return &VendorInfo{ID: v.cred.ID, Curve: v.cred.Curve().Name(), P: v.cred.P.Bytes(), QN: v.cred.QN.Bytes(),
		Currency: v.cred.Currency, Catalog: cat}
}

func (v *Vendor) price(item string, price int64) (Item, error) {
	it, ok := v.catalog[item]
	if !ok || it.Price != price {
		return Item{}, fmt.Errorf("%w: %q at %d", ErrPrice, item, price)
	}
	return it, nil
}

func (v *Vendor) reserve(ctx context.Context, serial, ref string, amount int64) error {
	req := ReserveRequest{Vendor: v.cred.ID, Serial: serial, Ref: ref, Amount: amount}
	req.MAC = mac(v.cred.Curve(), v.kvn, req.macBytes())
	if _, err := v.cfg.Operator.Reserve(ctx, req); err != nil {
		return fmt.Errorf("selfverify: vendor %s: reserve at operator: %w", v.cred.ID, err)
	}
	return nil
}

// OpenPayment handles a first payment (seed steps 1.2–1.3): K_UV from d_V·A,
// decrypt, verify N's signature on the token and the holder's signature with
// the token key, check the price and the limit, reserve online at N, store the
// session and answer with the goods under K_UV. Retrying the identical
// message returns the same receipt; any other reuse of A is refused.
func (v *Vendor) OpenPayment(ctx context.Context, m OpenPayment) (*PaymentResponse, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	curve := v.cred.Curve()
	aPub, err := curve.ParsePublicKey(m.A)
	if err != nil {
		return nil, fmt.Errorf("%w: a: %v", ErrInvalidMessage, err)
	}
	session := sessionID(curve, aPub.Bytes())
	digest := digestHex(m.Ciphertext)
	if cached, err := v.cachedResponse(ctx, session, 1, digest); cached != nil || err != nil {
		return cached, err
	}
	z, err := v.cred.Key.ECDH(aPub)
	if err != nil {
		return nil, err
	}
	k1, err := deriveKUV(curve, z, aPub.Bytes(), v.cred.ID)
	if err != nil {
		return nil, err
	}
	pt, err := openOnce(curve, k1, nonceRequest, m.Ciphertext, payAAD(session, 1))
	if err != nil {
		return nil, err
	}
	now := v.cfg.Now()
	// K_UV has decrypted a genuine message: from here on, whatever the
	// outcome, the session (A) is burnt, so that a refused payment cannot be
	// replayed later when it would pass.
	refuse := func(cause error) (*PaymentResponse, error) {
		_, err := v.db.ExecContext(ctx, v.db.Rebind(`INSERT INTO sv_vendor_sessions (session, vendor, serial, token_json, w, expires_at, spent, seq, chain_key, last_digest, last_response, created_at)
			VALUES (?, ?, '', '{}', 0, 0, 0, 1, ?, ?, '', ?)`), session, v.cred.ID, hex.EncodeToString(k1), digest, ms(now))
		if err != nil && !sqldb.IsUniqueViolation(err) {
			return nil, errors.Join(cause, fmt.Errorf("selfverify: vendor: %w", err))
		}
		return nil, cause
	}
	p, err := Parse[FirstPayload](pt)
	if err != nil {
		return refuse(err)
	}
	if p.Vendor != v.cred.ID {
		return refuse(fmt.Errorf("%w: %s", ErrWrongVendor, p.Vendor))
	}
	if err := p.Token.Verify(v.cred.QN); err != nil {
		return refuse(err)
	}
	tok := p.Token.Token
	if tok.Currency != v.cred.Currency {
		return refuse(fmt.Errorf("%w: token in %s, vendor sells in %s", ErrCurrency, tok.Currency, v.cred.Currency))
	}
	if ms(now) >= tok.ExpiresAt {
		return refuse(ErrTokenExpired)
	}
	if err := fresh(now, p.Timestamp, v.cfg.MaxClockSkew); err != nil {
		return refuse(err)
	}
	holder, err := curve.ParsePublicKey(tok.Key)
	if err != nil {
		return refuse(fmt.Errorf("%w: token key: %v", ErrInvalidMessage, err))
	}
	if !holder.Verify(p.holderBytes(aPub.Bytes()), p.HolderSig) {
		return refuse(fmt.Errorf("%w: payment not signed by the token's holder", ErrBadSignature))
	}
	item, err := v.price(p.Item, p.Price)
	if err != nil {
		return refuse(err)
	}
	if p.Price > tok.Limit {
		return refuse(fmt.Errorf("%w: price %d > W %d", ErrOverspend, p.Price, tok.Limit))
	}
	ref := PaymentRef(curve, session, 1)
	if err := v.reserve(ctx, tok.Serial, ref, p.Price); err != nil {
		return refuse(err)
	}
	rc := Receipt{Session: session, Seq: 1, Ref: ref, Item: item.ID, Price: p.Price, SpentAtVendor: p.Price, Goods: v.cfg.Goods(item, ref)}
	rpt, _ := json.Marshal(rc)
	ct, err := sealOnce(curve, k1, nonceResponse, rpt, payAAD(session, 1))
	if err != nil {
		return nil, err
	}
	resp := &PaymentResponse{Session: session, Seq: 1, Ciphertext: ct}
	rj, _ := json.Marshal(resp)
	tj, _ := json.Marshal(p.Token)
	err = v.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, v.db.Rebind(`INSERT INTO sv_vendor_sessions (session, vendor, serial, token_json, w, expires_at, spent, seq, chain_key, last_digest, last_response, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)`), session, v.cred.ID, tok.Serial, string(tj), tok.Limit, tok.ExpiresAt, p.Price,
			hex.EncodeToString(k1), digest, string(rj), ms(now)); err != nil {
			return err
		}
		return v.insertPayment(ctx, tx, ref, session, tok.Serial, 1, item.ID, p.Price, now)
	})
	if sqldb.IsUniqueViolation(err) {
		return nil, fmt.Errorf("%w: session %s already open", ErrReplay, session)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor: store payment: %w", err)
	}
	return resp, nil
}

func (v *Vendor) insertPayment(ctx context.Context, tx *sql.Tx, ref, session, serial string, seq int64, item string, price int64, now time.Time) error {
	_, err := tx.ExecContext(ctx, v.db.Rebind(`INSERT INTO sv_vendor_payments (ref, vendor, session, serial, seq, item, price, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		ref, v.cred.ID, session, serial, seq, item, price, ms(now))
	return err
}

// cachedResponse returns the stored response when (session, seq) is the last
// message processed and the ciphertext is byte-identical (a retry).
func (v *Vendor) cachedResponse(ctx context.Context, session string, seq int64, digest string) (*PaymentResponse, error) {
	var lastSeq int64
	var lastDigest, lastResp string
	err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT seq, last_digest, last_response FROM sv_vendor_sessions WHERE session = ?`), session).Scan(&lastSeq, &lastDigest, &lastResp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor: %w", err)
	}
	if seq > lastSeq {
		return nil, nil
	}
	if seq == lastSeq && lastResp != "" && subtle.ConstantTimeCompare([]byte(digest), []byte(lastDigest)) == 1 {
		var r PaymentResponse
		if err := json.Unmarshal([]byte(lastResp), &r); err != nil {
			return nil, fmt.Errorf("selfverify: vendor: stored response: %w", err)
		}
		return &r, nil
	}
	return nil, fmt.Errorf("%w: session %s seq %d already used (V is at %d)", ErrReplay, session, seq, lastSeq)
}

// NextPayment handles a later payment (seed steps J.2–J.3) under
// K_seq = H^(seq−1)(K_UV). Each key is used for one exchange: a sequence
// number at or below V's is a replay (an identical retry of the last message
// gets the stored receipt back); one ahead by up to MaxSkip is accepted, V
// hashing forward — this is how U and V resynchronise after a lost message
// without reusing a key. A message that fails to decrypt changes nothing.
func (v *Vendor) NextPayment(ctx context.Context, m NextPayment) (*PaymentResponse, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	curve := v.cred.Curve()
	digest := digestHex(m.Ciphertext)
	var serial, keyHex string
	var w, expires, spent, seq int64
	err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT serial, w, expires_at, spent, seq, chain_key FROM sv_vendor_sessions WHERE session = ? AND vendor = ?`), m.Session, v.cred.ID).
		Scan(&serial, &w, &expires, &spent, &seq, &keyHex)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: session %s", ErrNotFound, m.Session)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor: %w", err)
	}
	if m.Seq <= seq {
		if cached, err := v.cachedResponse(ctx, m.Session, m.Seq, digest); cached != nil || err != nil {
			return cached, err
		}
		return nil, fmt.Errorf("%w: seq %d, V is at %d", ErrSequence, m.Seq, seq)
	}
	if m.Seq-seq > v.cfg.MaxSkip {
		return nil, fmt.Errorf("%w: seq %d is more than %d ahead of %d", ErrSequence, m.Seq, v.cfg.MaxSkip, seq)
	}
	k, err := hex.DecodeString(keyHex)
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor: stored key: %w", err)
	}
	for i := seq; i < m.Seq; i++ {
		k = NextKey(curve, k)
	}
	pt, err := openOnce(curve, k, nonceRequest, m.Ciphertext, payAAD(m.Session, m.Seq))
	if err != nil {
		return nil, err
	}
	now := v.cfg.Now()
	ref := PaymentRef(curve, m.Session, m.Seq)
	// From here on K_seq is spent: whatever the outcome, V moves to seq.
	refuse := func(cause error) (*PaymentResponse, error) {
		_, err := v.db.ExecContext(ctx, v.db.Rebind(`UPDATE sv_vendor_sessions SET seq = ?, chain_key = ?, last_digest = ?, last_response = '' WHERE session = ? AND seq = ?`),
			m.Seq, hex.EncodeToString(k), digest, m.Session, seq)
		if err != nil {
			return nil, errors.Join(cause, fmt.Errorf("selfverify: vendor: %w", err))
		}
		return nil, cause
	}
	p, err := Parse[NextPayload](pt)
	if err != nil {
		return refuse(err)
	}
	if ms(now) >= expires {
		return refuse(ErrTokenExpired)
	}
	if err := fresh(now, p.Timestamp, v.cfg.MaxClockSkew); err != nil {
		return refuse(err)
	}
	item, err := v.price(p.Item, p.Price)
	if err != nil {
		return refuse(err)
	}
	if spent+p.Price > w {
		return refuse(fmt.Errorf("%w: spent %d + %d > W %d", ErrOverspend, spent, p.Price, w))
	}
	if err := v.reserve(ctx, serial, ref, p.Price); err != nil {
		return refuse(err)
	}
	rc := Receipt{Session: m.Session, Seq: m.Seq, Ref: ref, Item: item.ID, Price: p.Price, SpentAtVendor: spent + p.Price, Goods: v.cfg.Goods(item, ref)}
	rpt, _ := json.Marshal(rc)
	ct, err := sealOnce(curve, k, nonceResponse, rpt, payAAD(m.Session, m.Seq))
	if err != nil {
		return nil, err
	}
	resp := &PaymentResponse{Session: m.Session, Seq: m.Seq, Ciphertext: ct}
	rj, _ := json.Marshal(resp)
	if err := v.storeNext(ctx, nextRow{session: m.Session, from: seq, to: m.Seq, key: k, price: p.Price, digest: digest,
		response: string(rj), ref: ref, serial: serial, item: item.ID, now: now}); err != nil {
		return nil, err
	}
	return resp, nil
}

// nextRow is what storing a later payment writes: the session moves from
// seq from to seq to with key and the answer, and the payment is recorded.
type nextRow struct {
	session          string
	from, to         int64
	key              []byte
	price            int64
	digest, response string
	ref, serial      string
	item             string
	now              time.Time
}

// storeNext advances the session and records the payment, in one statement
// on PostgreSQL (one round trip) and in one transaction elsewhere. A session
// that moved meanwhile is ErrSequence.
func (v *Vendor) storeNext(ctx context.Context, r nextRow) error {
	if v.db.Dialect == sqldb.Postgres {
		res, err := v.db.ExecContext(ctx, `WITH u AS (
			UPDATE sv_vendor_sessions SET seq = $1, chain_key = $2, spent = spent + $3, last_digest = $4, last_response = $5
			WHERE session = $6 AND seq = $7 RETURNING session)
			INSERT INTO sv_vendor_payments (ref, vendor, session, serial, seq, item, price, created_at)
			SELECT $8, $9, session, $10, $1, $11, $3, $12 FROM u`,
			r.to, hex.EncodeToString(r.key), r.price, r.digest, r.response, r.session, r.from, r.ref, v.cred.ID, r.serial, r.item, ms(r.now))
		if err != nil {
			return fmt.Errorf("selfverify: vendor: store payment: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: concurrent payment on session %s", ErrSequence, r.session)
		}
		return nil
	}
	err := v.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, v.db.Rebind(`UPDATE sv_vendor_sessions SET seq = ?, chain_key = ?, spent = spent + ?, last_digest = ?, last_response = ? WHERE session = ? AND seq = ?`),
			r.to, hex.EncodeToString(r.key), r.price, r.digest, r.response, r.session, r.from)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: concurrent payment on session %s", ErrSequence, r.session)
		}
		return v.insertPayment(ctx, tx, r.ref, r.session, r.serial, r.to, r.item, r.price, r.now)
	})
	if err != nil {
		return fmt.Errorf("selfverify: vendor: store payment: %w", err)
	}
	return nil
}

// Session returns V's high-water mark of a session.
func (v *Vendor) Session(ctx context.Context, session string) (*SessionState, error) {
	if err := checkHex("session", session, 32); err != nil {
		return nil, err
	}
	var seq int64
	err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT seq FROM sv_vendor_sessions WHERE session = ? AND vendor = ?`), session, v.cred.ID).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: session %s", ErrNotFound, session)
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor: %w", err)
	}
	return &SessionState{Session: session, NextSeq: seq + 1}, nil
}

// Deposit submits the payments not yet deposited (up to 1000), signed with
// d_V, and records the operator's answer; it returns nil, nil when there is
// nothing to deposit. The batch is marked "submitting" under its nonce before
// it is sent: if the answer is lost (crash, network), the next Deposit sends
// the same batch with the same nonce, and N answers with the original
// deposit instead of a double-deposit refusal. Payments N rejects are marked
// "rejected" and not sent again.
func (v *Vendor) Deposit(ctx context.Context) (*DepositResponse, error) {
	var nonce string
	err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT deposit_id FROM sv_vendor_payments WHERE vendor = ? AND deposit_state = 'submitting' LIMIT 1`), v.cred.ID).Scan(&nonce)
	if errors.Is(err, sql.ErrNoRows) {
		if nonce, err = randomHex(16); err != nil {
			return nil, err
		}
		err = v.db.InTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, v.db.Rebind(`UPDATE sv_vendor_payments SET deposit_id = ?, deposit_state = 'submitting'
				WHERE ref IN (SELECT ref FROM sv_vendor_payments WHERE vendor = ? AND deposit_id IS NULL AND deposit_state IS NULL ORDER BY created_at, ref LIMIT ?)`),
				nonce, v.cred.ID, maxItems)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor deposit: %w", err)
	}
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT ref, serial, item, price FROM sv_vendor_payments WHERE vendor = ? AND deposit_id = ? AND deposit_state = 'submitting' ORDER BY ref`), v.cred.ID, nonce)
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor deposit: %w", err)
	}
	var items []DepositItem
	for rows.Next() {
		var it DepositItem
		if err := rows.Scan(&it.Ref, &it.Serial, &it.Item, &it.Amount); err != nil {
			rows.Close()
			return nil, err
		}
		items = append(items, it)
	}
	rows.Close()
	if len(items) == 0 {
		return nil, nil
	}
	req := DepositRequest{Vendor: v.cred.ID, Timestamp: ms(v.cfg.Now()), Nonce: nonce, Items: items}
	if req.Sig, err = v.cred.Key.Sign(rand.Reader, req.signingBytes()); err != nil {
		return nil, err
	}
	resp, err := v.cfg.Operator.Deposit(ctx, req)
	if err != nil {
		if isProtocolError(err) || errors.Is(err, ErrNotRegistered) {
			// A definitive answer: every payment of the batch was refused.
			state := "rejected"
			if errors.Is(err, ErrStale) || errors.Is(err, ErrBadSignature) || errors.Is(err, ErrNotRegistered) || errors.Is(err, ErrInvalidMessage) || errors.Is(err, ErrReplay) {
				state = "" // not about the payments: they stay depositable
			}
			if _, uerr := v.db.ExecContext(ctx, v.db.Rebind(`UPDATE sv_vendor_payments SET deposit_id = NULL, deposit_state = NULL WHERE deposit_id = ? AND deposit_state = 'submitting'`), nonce); uerr != nil {
				return nil, errors.Join(err, uerr)
			}
			if state != "" {
				if _, uerr := v.db.ExecContext(ctx, v.db.Rebind(`UPDATE sv_vendor_payments SET deposit_state = ? WHERE vendor = ? AND deposit_id IS NULL AND ref IN (`+placeholders(len(items))+`)`),
					append([]any{state, v.cred.ID}, refsOf(items)...)...); uerr != nil {
					return nil, errors.Join(err, uerr)
				}
			}
		}
		return nil, fmt.Errorf("selfverify: vendor deposit: %w", err)
	}
	rejected := make(map[string]bool, len(resp.Rejected))
	for _, r := range resp.Rejected {
		rejected[r.Ref] = true
	}
	err = v.db.InTx(ctx, func(tx *sql.Tx) error {
		for _, it := range items {
			state := StateAwaiting
			if rejected[it.Ref] {
				state = "rejected"
			}
			if _, err := tx.ExecContext(ctx, v.db.Rebind(`UPDATE sv_vendor_payments SET deposit_id = ?, deposit_state = ? WHERE ref = ?`), resp.ID, state, it.Ref); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor deposit: record: %w", err)
	}
	return resp, nil
}

func placeholders(n int) string {
	b := make([]byte, 0, 2*n)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '?')
	}
	return string(b)
}

func refsOf(items []DepositItem) []any {
	out := make([]any, len(items))
	for i, it := range items {
		out[i] = it.Ref
	}
	return out
}

// RefreshDeposit asks N for a deposit's state and records it per payment.
func (v *Vendor) RefreshDeposit(ctx context.Context, id string) (*DepositResponse, error) {
	resp, err := v.cfg.Operator.DepositStatus(WithLookupKey(ctx, v.cred.Key), id) // signed: only the vendor sees its deposits
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor: deposit %s: %w", id, err)
	}
	for _, c := range resp.Confirmations {
		if _, err := v.db.ExecContext(ctx, v.db.Rebind(`UPDATE sv_vendor_payments SET deposit_state = ? WHERE deposit_id = ? AND serial = ?`), c.State, id, c.Serial); err != nil {
			return nil, fmt.Errorf("selfverify: vendor: record deposit state: %w", err)
		}
	}
	return resp, nil
}

// VendorPayment is one payment as V stores it.
type VendorPayment struct {
	Ref          string `json:"ref"`
	Serial       string `json:"serial"`
	Seq          int64  `json:"seq"`
	Item         string `json:"item"`
	Price        int64  `json:"price"`
	DepositID    string `json:"deposit_id,omitempty"`
	DepositState string `json:"deposit_state,omitempty"`
}

// Payments lists V's stored payments, newest first (at most limit).
func (v *Vendor) Payments(ctx context.Context, limit int) ([]VendorPayment, error) {
	if limit <= 0 || limit > 10000 {
		limit = 100
	}
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT ref, serial, seq, item, price, deposit_id, deposit_state FROM sv_vendor_payments WHERE vendor = ? ORDER BY created_at DESC, ref LIMIT ?`), v.cred.ID, limit)
	if err != nil {
		return nil, fmt.Errorf("selfverify: vendor payments: %w", err)
	}
	defer rows.Close()
	var out []VendorPayment
	for rows.Next() {
		var p VendorPayment
		var dep, st sql.NullString
		if err := rows.Scan(&p.Ref, &p.Serial, &p.Seq, &p.Item, &p.Price, &dep, &st); err != nil {
			return nil, err
		}
		p.DepositID, p.DepositState = dep.String, st.String
		out = append(out, p)
	}
	return out, rows.Err()
}

// RefreshDeposits refreshes every deposit of V that still awaits its users'
// confirmations.
func (v *Vendor) RefreshDeposits(ctx context.Context) error {
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT DISTINCT deposit_id FROM sv_vendor_payments WHERE vendor = ? AND deposit_state = ?`), v.cred.ID, StateAwaiting)
	if err != nil {
		return fmt.Errorf("selfverify: vendor: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := v.RefreshDeposit(ctx, id); err != nil {
			return err
		}
	}
	return nil
}
