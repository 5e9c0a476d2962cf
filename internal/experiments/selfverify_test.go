package experiments

import (
	"context"
	"testing"
	"time"

	"github.com/qshield/qshield/selfverify/ecqv"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// TestSelfVerifyCosts runs the cost harness (public message layer only) on
// both curves with a tiny budget: every figure is measured and positive.
func TestSelfVerifyCosts(t *testing.T) {
	for _, c := range []*ecqv.Curve{ecqv.P256(), ecqv.SM2()} {
		cs, err := measureSVCosts(c, 10*time.Millisecond)
		if err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		for name, d := range map[string]time.Duration{"hash": cs.Hash, "mul": cs.Mul, "sign": cs.Sign, "verify": cs.Verify,
			"later user": cs.LaterUser, "later vendor": cs.LaterVendor, "first user": cs.FirstUser, "first vendor": cs.FirstVendor} {
			if d <= 0 {
				t.Errorf("%s: %s = %v", c.Name(), name, d)
			}
		}
	}
}

// TestSelfVerifyThroughput runs the HTTPS payment harness briefly on SQLite.
func TestSelfVerifyThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end HTTPS run")
	}
	db := sqldbtest.Open(t, sqldbtest.Backends()[0])
	tp, err := measureSVThroughput(context.Background(), db, 2, 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tp.Payments == 0 || tp.Refused != 0 {
		t.Fatalf("%+v", tp)
	}
}
