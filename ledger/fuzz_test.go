package ledger

import (
	"math"
	"testing"
	"time"
)

func FuzzCursor(f *testing.F) {
	for _, s := range []string{"", encodeCursor(1), encodeCursor(math.MaxInt64), "AQAAAAAAAAAA", "garbage!", "AAAAAAAAAAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, c string) {
		seq, err := decodeCursor(c)
		if err != nil {
			return
		}
		if seq <= 0 {
			t.Fatalf("cursor %q decoded to %d", c, seq)
		}
		if c != "" && encodeCursor(seq) != c {
			t.Fatalf("cursor %q is not canonical (re-encodes as %q)", c, encodeCursor(seq))
		}
	})
}

func FuzzValidateRequest(f *testing.F) {
	f.Add("key-1", "alice", "bob", int64(100), "CNY", "memo", false, int64(0))
	f.Add("", "a", "a", int64(0), "cny", "\xff", true, int64(-1))
	f.Add("k", "a:b.c-d_e", "x", int64(MaxAmount), "EUR", "", true, int64(3600e9))
	f.Add("k", "a", "b", int64(math.MinInt64), "EUR", "", false, int64(math.MaxInt64))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, key, from, to string, amount int64, cur, memo string, pending bool, expOff int64) {
		req := TransferRequest{IdempotencyKey: key, From: from, To: to, Amount: amount, Currency: cur, Memo: memo, Pending: pending}
		if expOff != 0 {
			req.ExpiresAt = now.Add(time.Duration(expOff))
		}
		exp, err := validateRequest(req, now, DefaultExpiry)
		if err != nil {
			return
		}
		if amount <= 0 || amount > MaxAmount {
			t.Fatalf("accepted amount %d", amount)
		}
		if from == to || !ValidAccountID(from) || !ValidAccountID(to) || !ValidCurrency(cur) || !validKey(key) {
			t.Fatalf("accepted %+v", req)
		}
		if pending != !exp.IsZero() || (pending && !exp.After(now)) {
			t.Fatalf("pending %v with expiry %v", pending, exp)
		}
	})
}
