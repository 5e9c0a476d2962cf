package selfverify

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

func tokenKey(t *testing.T, u *User, serial string) *ecqv.PrivateKey {
	t.Helper()
	u.mu.Lock()
	wt, err := u.token(serial)
	u.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return keyOf(t, wt.Secret)
}

// Finding (low, #12): GET tokens/{serial}, tokens/{serial}/confirmations
// and deposits/{id} answered anyone who had the identifier: a token's
// totals, its pending confirmations, a vendor's deposit. They now answer only
// a request signed by the owner's key. Without the fix every refusal below
// is a 200.
func TestLookupsOnlyByOwner(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, db *sqldb.DB) {
		s := newHTTPSetup(t, db)
		ctx := context.Background()
		vc, err := NewVendorClient(s.vSrv.URL, s.vSrv.Client())
		if err != nil {
			t.Fatal(err)
		}
		alice, bob := s.httpUser(t, "alice"), s.httpUser(t, "bob")
		ast, err := alice.Withdraw(ctx, 500, 0)
		if err != nil {
			t.Fatal(err)
		}
		bst, err := bob.Withdraw(ctx, 500, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Pay(ctx, vc, "pen"); err != nil {
			t.Fatal(err)
		}
		dep, err := s.vendor.Deposit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		aliceKey, bobKey := tokenKey(t, alice, ast.Token.Serial), tokenKey(t, bob, bst.Token.Serial)
		other := s.e.register("bakery", RoleVendor)
		serial := ast.Token.Serial

		// Unsigned: 401, as before any key is tried.
		for _, path := range []string{"tokens/" + serial, "tokens/" + serial + "/confirmations", "deposits/" + dep.ID} {
			resp, err := s.opSrv.Client().Get(s.opSrv.URL + "/v1/selfverify/" + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("unsigned GET %s: %d", path, resp.StatusCode)
			}
		}
		// Signed by another party's key: 403, and the same for an object
		// that does not exist (no existence oracle).
		if _, err := s.opClient.TokenStatus(WithLookupKey(ctx, bobKey), serial); httpx.ProblemCode(err) != "not_owner" {
			t.Errorf("bob reads alice's token: %v", err)
		}
		if _, err := s.opClient.Confirmations(WithLookupKey(ctx, bobKey), serial); httpx.ProblemCode(err) != "not_owner" {
			t.Errorf("bob reads alice's confirmations: %v", err)
		}
		if _, err := s.opClient.DepositStatus(WithLookupKey(ctx, other.Key), dep.ID); httpx.ProblemCode(err) != "not_owner" {
			t.Errorf("another vendor reads the deposit: %v", err)
		}
		if _, err := s.opClient.DepositStatus(WithLookupKey(ctx, aliceKey), dep.ID); httpx.ProblemCode(err) != "not_owner" {
			t.Errorf("the payer's token key reads the vendor's deposit: %v", err)
		}
		if _, err := s.opClient.TokenStatus(WithLookupKey(ctx, bobKey), "00000000000000000000000000000000"); httpx.ProblemCode(err) != "not_owner" {
			t.Errorf("a token that does not exist: %v", err)
		}
		if !s.e.audit.has("selfverify.lookup", "denied") {
			t.Error("refused look-up not audited")
		}
		// A signature for one path does not open another.
		req, _ := http.NewRequest(http.MethodGet, s.opSrv.URL+"/v1/selfverify/tokens/"+serial, nil)
		ts := time.Now().UnixMilli()
		h, err := signLookup(WithLookupKey(ctx, aliceKey), http.Header{}, http.MethodGet, "/v1/selfverify/tokens/"+serial+"/confirmations", ts)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		if resp, err := s.opSrv.Client().Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("signature for another path: %v %v", resp.StatusCode, err)
		}
		// A stale signature: 401.
		h, _ = signLookup(WithLookupKey(ctx, aliceKey), http.Header{}, http.MethodGet, "/v1/selfverify/tokens/"+serial, ts-int64(time.Hour/time.Millisecond))
		req.Header = h
		if resp, err := s.opSrv.Client().Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("stale signature (%s): %v %v", strconv.FormatInt(ts, 10), resp.StatusCode, err)
		}
		// The owners are answered.
		if st, err := s.opClient.TokenStatus(WithLookupKey(ctx, aliceKey), serial); err != nil || st.Reserved == 0 {
			t.Errorf("alice reads her token: %+v %v", st, err)
		}
		if _, err := s.opClient.Confirmations(WithLookupKey(ctx, aliceKey), serial); err != nil {
			t.Errorf("alice reads her confirmations: %v", err)
		}
		if _, err := s.vendor.RefreshDeposit(ctx, dep.ID); err != nil {
			t.Errorf("the vendor reads its deposit: %v", err)
		}
	})
}
