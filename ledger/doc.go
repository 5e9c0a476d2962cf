// Package ledger is qshield's double-entry money ledger: accounts in one ISO 4217
// currency each, transfers in integer minor units, two-phase (pending → posted or
// voided/expired) transfers for the schemes that reserve money first, idempotency
// keys, and balance and history queries. It stores everything in the database
// given to [Open] (SQLite or PostgreSQL, see internal/sqldb) and applies its own
// embedded migrations under the component name "ledger".
//
// # Invariants
//
//   - Double entry: every transfer debits one account and credits another by the
//     same amount, and the account rows are updated in the same database
//     transaction that records the transfer. The sum of all balances of a
//     currency therefore never changes ([Ledger.TotalBalance]); money enters the
//     ledger only through accounts that may go negative (system/issuing accounts).
//   - A protected account (AllowNegative false) never has Available() < 0:
//     posted balance minus the debits reserved by pending transfers. This is
//     checked in Go under the row locks and enforced again by a CHECK constraint,
//     so a bug in the Go check cannot overdraw an account.
//   - Amounts are > 0 and ≤ [MaxAmount]; no balance or pending total may leave
//     ±[MaxBalance],
//     so no sum of balances or pending amounts can overflow int64.
//   - An idempotency key is globally unique (a UNIQUE index). A request whose key
//     was already used with the same parameters (from, to, amount, currency,
//     pending, memo) returns that transfer; with other parameters it fails with
//     [ErrIdempotencyConflict]. Refused requests are not recorded, so a key whose
//     first use was refused (e.g. insufficient funds) can be used again.
//
// # Concurrency
//
// PostgreSQL: a transfer is one pipelined batch (one network round trip, one
// implicit READ COMMITTED transaction) of two statements: SELECT … ORDER BY id
// FOR UPDATE, which locks both account rows in ID order (PostgreSQL locks rows
// in the order the sort returns them), then one statement that re-reads the
// locked rows on a fresh snapshot, inserts the transfer only if every check
// passes, and updates both balances only if the insert happened. Every
// transaction takes account locks in the same global order, so transfers
// cannot deadlock, and the locks are held only while the server runs the
// batch and commits. The idempotency insert uses ON CONFLICT DO NOTHING, so a
// concurrent duplicate waits for the first and then returns it. Post/Void
// lock the transfer row first and then the accounts in ID order; a transfer
// never waits for an existing transfer row, so no cycle can form (and
// sqldb.InTx retries a deadlock or serialization failure should one occur).
//
// Concurrent transfers on PostgreSQL are batched ([WithPostgresBatchers]): a
// transfer that finds others in progress is handed to a batcher, which takes
// every transfer waiting and writes them in one transaction of two round
// trips — BEGIN, lock every account of the batch in ID order with one
// SELECT … FOR UPDATE and read the transfers already stored under its keys;
// then one multi-row INSERT, one UPDATE of the touched accounts' balances,
// the batch's audit records and COMMIT. Hot accounts are locked once per
// batch instead of once per transfer. Each transfer is decided in Go, in
// order, against the balances the earlier ones left (batch.go), so every
// outcome — replay, conflict, refusal, acceptance — is the one it would have
// had alone in that order. A lone transfer keeps the one-round-trip path; a
// batch that fails for any reason but a transient one is rolled back and its
// transfers run one at a time on that path.
//
// SQLite has one writer at a time, and with synchronous=FULL every commit is an
// fsync. Opening a transaction per transfer would cap throughput at the disk's
// fsync rate, so writes go through group commit: a single writer goroutine takes
// every request waiting at that moment, runs them in one transaction, commits
// once, and only then acknowledges each request. Consecutive transfers of a
// batch are decided together as on PostgreSQL (one read of their accounts and
// keys, one multi-row insert, one balance update; a refused transfer writes
// nothing); other requests run inside a SAVEPOINT each (a refused request is
// rolled back to its savepoint and does not affect the others). A request is therefore acknowledged only after it is durable, and a
// failed commit fails every request of the batch, none of which was
// acknowledged. Under concurrency the committer lingers briefly
// ([WithGroupCommitWindow]) so that the clients released by one commit join
// the next batch rather than forming alternating half-size batches. Reads run
// concurrently on the WAL snapshot. (A faster design would commit with
// synchronous=NORMAL and fsync the WAL on a second goroutine, overlapping the
// fsync with the next batch; it is not used because readers would then see
// transfers that are not yet durable.) Accounts are a WITHOUT ROWID table and
// transfer IDs start with a timestamp, so a batch dirties few pages.
//
// # History
//
// [Ledger.History] pages newest first by an insertion sequence number, so
// pages stay stable while new transfers arrive. On PostgreSQL sequence numbers
// are assigned before commit, so a transfer that commits after a concurrent
// one with a higher number can appear above a page a reader has already
// passed; re-reading from the start shows it.
//
// # Expiry
//
// Pending transfers expire at ExpiresAt (default 24 h). Expiry is applied
// lazily whenever it matters — Post, Void and GetTransfer of an expired
// transfer, Account of an account with reservations, and a transfer that would
// otherwise be refused for insufficient funds — and by a background sweeper
// ([WithSweepInterval]) calling [Ledger.ExpirePending]. An expired transfer can
// never be posted ([ErrExpired]).
package ledger
