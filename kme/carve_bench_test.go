package kme

import (
	"context"
	"testing"

	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// BenchmarkLargeKeys moves 64-kbit keys (the charger's size) through a
// pair with the platform's limits: enc_keys of 128 keys at KME_A, dec_keys
// of the same keys at KME_B, over mutual TLS, on SQLite. The pool is filled
// the way the platform's link fills it (blocks of 256-bit keys joined by
// JoinKeys) and stored in segments of 256 bits (the pool before carving:
// every 64-kbit key is 256 rows at each KME) or 65536 bits (one row), and,
// as the peer in the same run, a pair whose key_size and unit are 64 kbit
// (the charging lab's dedicated pair, which cannot serve QMSP's small keys).
// Bytes per operation: one key's material, so MB/s is the key throughput.
func BenchmarkLargeKeys(b *testing.B) { benchKeys(b, 65536) }

// BenchmarkSmallKeys is BenchmarkLargeKeys with 128 keys of 256 bits per
// request (QMSP's and the key-manager experiment's shape): what carving
// small keys from 64-kbit segments costs against 256-bit units.
func BenchmarkSmallKeys(b *testing.B) { benchKeys(b, 256) }

func benchKeys(b *testing.B, size int) {
	for _, c := range []struct {
		name     string
		key, seg int
	}{
		{"serve-before/segment=256", 256, 256},
		{"serve/segment=65536", 256, 65536},
		{"lab/key_size=65536", 65536, 65536},
	} {
		key, seg := c.key, c.seg
		b.Run(c.name, func(b *testing.B) {
			db := sqldbtest.Open(b, sqldbtest.Backends()[0])
			ca := newCAtb(b, db)
			p, err := StartPair(context.Background(), db, PairConfig{CA: ca,
				A:         SiteConfig{KMEID: "KME_A", SAEs: []string{"charger"}},
				B:         SiteConfig{KMEID: "KME_B", SAEs: []string{"qssc"}},
				MasterKey: testMaster, SyncGrace: -1, ReconcileEvery: -1,
				KeySizeBits: min(key, size), SegmentBits: seg, MaxKeySize: 65536, MaxKeyCount: 4_000_000 * 256 / key})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ctx := context.Background()
			ta, err := p.ClientTLS(ctx, "charger")
			if err != nil {
				b.Fatal(err)
			}
			tb, err := p.ClientTLS(ctx, "qssc")
			if err != nil {
				b.Fatal(err)
			}
			ca1, cb1 := etsi014.New(p.AURL, ta), etsi014.New(p.BURL, tb)
			const batch = 128
			rounds := max(1, (b.N+batch-1)/batch)
			sa, sb := p.Sinks()
			ja, jb := JoinKeys(sa), JoinKeys(sb)
			for n := rounds * batch * size / 8; n > 0; n -= 4096 * 32 {
				block := qkd.RandomKeys(4096, 32)
				if err := ja(ctx, block); err != nil {
					b.Fatal(err)
				}
				if err := jb(ctx, block); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(size / 8))
			b.ResetTimer()
			for range rounds {
				ks, err := ca1.EncKeys(ctx, "qssc", batch, size)
				if err != nil {
					b.Fatal(err)
				}
				ids := make([]string, len(ks))
				for i, k := range ks {
					ids[i] = k.ID
				}
				if _, err := cb1.DecKeys(ctx, "charger", ids...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
