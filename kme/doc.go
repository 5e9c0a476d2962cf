// Package kme is qshield's key management entity (KME): one per site, it
// holds the site's pool of quantum keys and delivers them to applications
// (SAEs) through ETSI GS QKD 014 V1.1.1, the REST interface real QKD
// equipment speaks, so that a real link can replace the simulated one
// without changing anything above the KME.
//
// # API
//
// [KME.Handler] serves the five ETSI 014 calls under /api/v1/keys/:
// {slave_SAE_ID}/status (GET), {slave_SAE_ID}/enc_keys (GET with number and
// size, POST with a Key request) and {master_SAE_ID}/dec_keys (GET with one
// key_ID, POST with Key IDs), with the specification's JSON member names
// (package [etsi014] holds the types and a client). Errors are the
// specification's Error object {"message", "details"} with 400 (bad request
// format or limits: size not a multiple of 8, size or number beyond the
// limits, malformed JSON, unknown or already delivered key ID, unsupported
// mandatory extension or multicast), 401 (no or unknown client certificate,
// SAE not attached to this KME, key of another SAE pair) or 503 (not enough
// key, peer KME unreachable, store failure). A rejected request changes
// nothing. Every connection is TLS with client certificates from the
// platform CA; the SAE ID is the certificate's CommonName ([ServerTLS] lets a
// connection without a certificate through only so that it can be answered
// with the ETSI 401 body).
//
// # Pool
//
// The QKD link delivers keys with UUIDs agreed by both ends ([KME.Deposit] is
// a qkd.Sink; [JoinKeys] joins a block's keys into one). The pool stores
// key material, not keys: a deposited key is cut into units of SegmentBits
// (the last one shorter) — one unit keeps the key's ID, further units get
// RFC 9562 version-5 UUIDs derived from it — so both KMEs file the same
// bytes under the same IDs. A request for number keys of size bits (any
// multiple of 8 from min_key_size to max_key_size) carves them from the
// units at its end of the pool, in order: whole units while they fit, then
// the head of the next one, whose remainder stays in the pool under a name
// derived from the cut (see carve.go). The peer KME is told which units
// each key used and where the last was cut, and derives the same pieces
// under the same names, so the slave's dec_keys by key_ID gets the same
// bytes. A cut rewrites the unit's row with its remainder only, under an SQL
// check of the ID it had, so no material is handed out twice and none that
// was delivered stays in the pool; keys never hold more bits than the link
// distilled. stored_key_count is the available material in keys of
// key_size (the default size), and max_key_count bounds it: a deposit
// beyond MaxKeyCount × key_size bits is dropped ([Pair.Sinks] block
// instead, which pauses the link). Large segments make large keys cheap
// (the platform's 64-kbit charging keys are one row each) at the cost of
// rewriting a segment's remainder for each small key.
//
// Units live in the platform database (table kme_keys, component "kme"),
// encrypted with AES-256-GCM under a key derived from the 32-byte pool
// master key; the additional data binds each ciphertext to its KME and unit
// ID, and a key check value in kme_meta makes a wrong master key an error at
// start-up. Delivery deletes the rows (SQLite's secure_delete overwrites the
// freed pages; copies in the WAL or in PostgreSQL's dead tuples stay
// encrypted). In memory the KME keeps only an index (IDs, order,
// reservations) rebuilt from the database at start-up; every update checks
// in SQL the state it expects, so even a wrong index can never hand a unit
// out twice. Updates from concurrent requests go through one group-commit
// writer, each in its own savepoint, so that durability costs one commit
// per batch rather than per request.
//
// Several processes (platform nodes) may run a KME under the same ID on one
// PostgreSQL database: sequence numbers come from the database, dec_keys
// finds a key another process reserved by reading kme_keys when its own
// index lacks it, and a unit the database no longer holds as available
// (delivered by another process, or loaded at start-up and delivered since)
// leaves the index at the first request that meets it; [KME.Prune] then
// drops every such unit, and runs before each reconciliation. Each process
// offers the units it deposited itself or loaded at start-up, and reads the
// units other processes deposited since (by sequence number) when its pool
// cannot serve a request, or before it tells its peer a unit is missing: a
// node without a QKD link of its own (the link as a singleton) serves keys
// from the link's node.
//
// # Keeping the two sites in step
//
// A key must reach the master SAE (enc_keys at its KME) and the slave SAE
// (dec_keys at the other KME) exactly once each. Before answering enc_keys,
// the master's KME reserves the chosen units at the peer KME over the
// KME-to-KME channel (under /api/v1/kme-sync/, same mutual-TLS listener,
// accepted only from the peer KME's certificate): the peer marks them
// reserved for (master, slave), then the master's KME deletes its copies
// and answers. If the peer is unreachable the request fails with 503 and
// nothing changes; if the local commit fails after the peer reserved, the
// reservation is released at the peer. When both SAEs are local, the peer
// discards its copies and the local KME keeps them reserved for the slave.
// The two KMEs pick from opposite ends of the (identically ordered) pool —
// the one whose ID sorts first the oldest units, the other the newest units
// older than SyncGrace — so concurrent requests at both sites do not
// collide until the pool is nearly empty; a collision or a unit the peer
// lacks makes the reservation fail (409 internally), the units the peer
// lacks are dropped and the request retried. [KME.Reconcile], run at
// start-up and periodically by [KME.Serve], removes units that only one side
// holds (a crash between the two deposits of a block), so the pools agree
// after a restart of either KME.
//
// # Link health
//
// [KME.SetLink] records the QKD link state (up, aborted on eavesdropping,
// down); it appears in status_extension ("qshield_link") and in the 503
// message once the pool runs dry. [Pair] wires two KMEs on one database
// with their own listeners and runs a link between them ([Pair.RunLink]).
package kme
