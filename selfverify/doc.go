// Package selfverify implements the dynamic-symmetric-key mobile commerce
// scheme of Yang, Xu, Meng and He (2014, seed 002) on qshield's ledger and
// audit log: a network operator N, mobile users U and vendors V with
// self-certified keys (ECQV, package ecqv), prepaid e-balance tokens, payments
// under a hash-chained symmetric key, and deposits that the user confirms.
//
// # Roles
//
//   - [Operator] (N) runs inside `qshield serve` ([Operator.Handler] under
//     /v1/selfverify/). It holds d_N, issues self-certified keys, issues and
//     signs tokens, is the online arbiter of every token's spent sum, and
//     settles deposits. State: tables sv_* (component "selfverify").
//   - [User] (U) is the phone: a [Wallet] (JSON, secrets, mode 0600) and an
//     [OperatorAPI] ([OperatorClient] over HTTPS).
//   - [Vendor] (V) is a separate service ([Vendor.Handler] under /v1/vendor/)
//     with its own tables (component "selfverify-vendor"), reached by phones
//     through [VendorClient]; it talks to N through an [OperatorClient]. Its
//     till shows a [VendorCode] (its URL and an item) for a phone to scan;
//     its API answers CORS requests from any origin, without credentials,
//     so a browser wallet served elsewhere can pay it.
//
// # Builds
//
// The user's side, the message layer (User, Wallet, Register, the
// messages, their cryptography, VendorCode, LookupHeaders) and the HTTP
// clients (OperatorClient, VendorClient, on httpx.Client) build on every
// platform, WebAssembly included: the browser wallet (internal/wallet/wasm)
// runs this code, not a copy, with the page's fetch as the clients'
// httpx.Doer. The operator, the vendor, their stores and the HTTP server
// need a database (modernc sqlite has no js/wasm port), so those files
// carry //go:build !wasm; local.go and local_wasm.go hold the one piece
// that differs (the error codes whose sentinels come from the ledger).
//
// # The seed's §3, step by step
//
// Registration (§3.1; the seed's §2 self-verified signature). ECQV, SEC 4:
// N first enrols an identity out of band ([Operator.Enroll]: identity, role,
// ledger account → one-time code; this is the seed's "secure channel"). X
// sends (ID_X, R_X = k_X·G, code) ([Register]); N returns P_X = R_X + k·G and
// r = e·k + d_N with e = H_n(Cert(ID_X, P_X)) ([Operator.Register]); X computes
// d_X = e·k_X + r and refuses the answer unless d_X·G = e·P_X + Q_N
// ([ecqv.Complete]). N stores only (ID_X, P_X). Anyone rebuilds Q_X = e·P_X +
// Q_N ([ecqv.Reconstruct]); no certificate is stored or sent afterwards.
//
// Withdrawing (§3.2). Steps 1–2: U signs (ID_U, W, currency, lifetime, token
// key T = t·G, timestamp, nonce) with d_U ([User.Withdraw]); N rebuilds Q_U,
// verifies, and refuses a timestamp outside ±MaxClockSkew (2 min) and any
// other request reusing the nonce ([Operator.Withdraw]). Step 3: N creates the
// token (serial, W, expiry, T). Step 4: N moves W from U's ledger account to
// the escrow account "selfverify.escrow.<CUR>" (a posted transfer whose
// idempotency key is derived from the serial) and signs the token with d_N.
// Step 5: U verifies N's signature and derives K_UN = HKDF(x(t·Q_N), serial,
// ID_U); N derives the same key as HKDF(x(d_N·T), …) whenever it needs it, so
// no symmetric secret is stored at N.
//
// Paying (§3.3). Steps 1.1–1.3, first payment to V: U picks a, sends A = a·G
// and AEAD_{K_UV}(token + N's signature, ID_V, GI = item and price, timestamp,
// holder signature with t over (serial, ID_V, A, GI)) with K_UV =
// HKDF(x(a·Q_V), A, ID_V) ([FirstPaymentMessage]); V computes K_UV from d_V·A,
// decrypts, verifies N's signature on the token, the holder's signature with
// T, the price against its catalogue, expiry, and the limit, reserves the
// amount online at N (below), stores the session and returns the goods under
// K_UV ([Vendor.OpenPayment]). Steps J.1–J.3, later payments: both sides step
// K_j = H(label ‖ K_{j−1}) ([NextKey]) and V accepts while the spent sum stays
// ≤ W ([Vendor.NextPayment]). The AEAD is AES-256-GCM on P-256 and SM4-GCM on
// SM2; each K_j seals exactly one request (nonce 1) and one response (nonce 2).
//
// Depositing (§3.4). Step 1: V signs the batch of collected payments with d_V
// ([Vendor.Deposit]). Step 2: N rebuilds Q_V and verifies; each payment must
// match a reservation of this vendor that was never deposited; the batch is
// all-or-nothing ([Operator.Deposit]). Step 3: N sends U, per token, the
// payment list under K_UN ([Operator.Confirmations]); U checks every payment
// against its own wallet and answers agree or refuse with an HMAC under K_UN
// ([User.Confirm], [Operator.Confirm]). Only on agreement before the deadline
// does the amount move escrow → V; refusal or no answer by the deadline moves
// nothing and is audited. The rest of W goes back to U when the token is closed
// ([User.Close]) or has expired, once nothing is outstanding, or after the
// deposit grace period ([Operator.Sweep], [Operator.Run]).
//
// # Where the seed is weak, and the standard fixes used
//
//   - Overspending across vendors. The seed lets each V check "spent ≤ W"
//     locally, so a phone could spend W at every vendor at once. Here N is the
//     arbiter: before releasing goods V reserves each payment's amount at N
//     ([Operator.Reserve], HMAC under K_VN = HKDF(x(d_V·Q_N))), and N raises
//     the token's reserved sum with one conditional UPDATE (reserved + amount ≤
//     W, token active and unexpired). Of two concurrent payments at two
//     vendors that together exceed W, exactly one is refused, before goods are
//     released. Binding each token to one vendor would avoid the online step
//     but makes a token useless after one shop; the online check costs one
//     round trip to N per payment and keeps V's offline check as a first line.
//     At deposit N accepts only reserved payments, and the user confirms them.
//   - Stolen tokens. The seed's payment carries the token with N's signature;
//     anyone who saw it (e.g. a vendor) could spend it elsewhere. The token
//     therefore binds a fresh per-token key T, and the first payment to each
//     vendor is signed with t. T is unlinkable to U's identity, so anonymity
//     towards V is kept.
//   - Key reuse in the chain. Each K_j is used for one exchange. U saves the
//     new index before sending; V keeps its high-water mark and the last
//     response: a byte-identical retry gets the stored response back, any
//     other index at or below V's is a replay, an index ahead (lost messages
//     or a phone restored from a backup) is accepted up to MaxSkip steps with V
//     hashing forward; U learns V's mark from [Vendor.Session]. A message that
//     does not decrypt changes nothing. A key that decrypted a refused payment
//     is burnt all the same.
//   - Freshness. Every signed request carries a timestamp (±2 min) and a
//     nonce; N keeps used nonces, so a replay inside the window returns the
//     original result (idempotent retry) and never moves money twice.
//   - Vendor fraud at deposit. The user confirmation (the seed's own fix) is
//     automatic on the phone: it agrees only when every payment in the request
//     is one it made, to that vendor, for that amount ([AgreeIfKnown]).
//
// # Anonymity
//
// V receives and stores token serials, token keys T, ephemeral points A, chain
// keys and prices — never U's identity, account or key (TestHTTPAndAnonymity
// scans every byte V receives and stores). N knows which user holds which
// token, as it must to settle.
//
// # Money and crash safety
//
// Each money movement (funding a token, settling an agreed confirmation,
// refunding the rest of W) is one database transaction: the state row moves
// funding → active, agreed → settled or refunding → refunded under a row
// lock, Ledger.TransferTx posts the transfer (idempotency keys
// "selfverify:withdraw:…", "selfverify:settle:…", "selfverify:refund:…") and
// the audit record is appended, all or nothing. A step a crash interrupted is
// still in its first state, and [Operator.Sweep] runs it again. The escrow account is protected (it can never go
// negative). On SQLite the hot-path writes (reservations, vendor payment
// records) go through group commit (see committer); on PostgreSQL each is a
// single statement (one round trip), with the transactional path as fallback.
//
// # Message layer
//
// The cryptography of a payment without any state is exported for other
// implementations of either side, for tests that build or forge messages and
// for measuring the scheme's cost: [FirstPaymentMessage] and
// [NextPaymentMessage] (U), [OpenFirstPayment], [OpenNextPayment] and
// [SealReceipt] (V), [OpenReceipt] (U), and the SigningBytes methods of the
// signed messages. The demo (internal/scenario) and the cost experiment
// (internal/experiments) use only these and the services.
//
// # Known limits
//
// The operator's d_N is stored in the database sealed with the platform's
// key ([LoadOrCreateOperatorKey]; in clear only without a sealer, in tests);
// a vendor's d_V is stored in its database in hex. Production would keep d_N
// in an HSM/KMS. The CLI phone's wallet file is not encrypted at rest (the
// browser wallet seals it under a non-extractable WebCrypto key). ECQV's
// scalar arithmetic on secrets is constant time (filippo.io/bigmod); scalars
// still travel in *big.Int between steps. The look-ups of a token, its
// confirmations and a deposit answer only a query signed by the owner's key
// (lookup.go). A vendor that crashes between a reservation at N and its
// own commit leaves a reservation it will never deposit; it lapses at token
// close and the money returns to U.
package selfverify
