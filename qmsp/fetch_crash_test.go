package qmsp

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// dyingKeys fetches from the key manager and then dies before the PPS can
// store what it got: the answer never reaches the PPS (kill) or the
// caller's request is cancelled (cancel).
type dyingKeys struct {
	inner  SlaveKeys
	cancel context.CancelFunc // nil: kill
}

var errKilled = errors.New("process killed after the key manager delivered")

func (d *dyingKeys) DecKeys(ctx context.Context, master string, ids ...string) ([]etsi014.KeyMaterial, error) {
	keys, err := d.inner.DecKeys(ctx, master, ids...)
	if err != nil || d.cancel == nil {
		return nil, errors.Join(err, errKilled)
	}
	d.cancel()
	return keys, nil
}

// TestPPSFetchSurvivesCrash: the key manager deletes a key when it hands it
// to the PPS, and the PPS stores it in its own transaction. A PPS killed
// between the two lost the batch: every code on that key was unpayable. With
// the key manager keeping delivered keys for a while (RedeliverWithin, as
// the platform runs it) the next PPS (a restart, or another node) fetches
// the same key again; without it the key is gone. A payment request
// cancelled between the two no longer loses the key either.
func TestPPSFetchSurvivesCrash(t *testing.T) {
	for _, b := range sqldbtest.Backends() {
		for _, window := range []time.Duration{0, 10 * time.Minute} {
			t.Run(b.Name+"/"+window.String(), func(t *testing.T) {
				db := sqldbtest.Open(t, b)
				ctx := context.Background()
				enc, _ := pki.RawKey(bytes.Repeat([]byte{9}, 32))
				ca, err := pki.OpenOrCreateCA(ctx, db, "qmsp-test", pki.Options{}, enc)
				if err != nil {
					t.Fatal(err)
				}
				pair, err := kme.StartPair(ctx, db, kme.PairConfig{
					CA: ca, MasterKey: bytes.Repeat([]byte{1}, 32),
					A:          kme.SiteConfig{KMEID: "KME_PLATFORM", SAEs: []string{"pps"}, RedeliverWithin: window},
					B:          kme.SiteConfig{KMEID: "KME_SUPERMARKET", SAEs: []string{"css"}},
					MaxKeySize: 8192, SyncGrace: -1, ReconcileEvery: -1,
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pair.Close() })
				fillKeys(t, pair, 100)
				cssTLS, _ := pair.ClientTLS(ctx, "css")
				ppsTLS, _ := pair.ClientTLS(ctx, "pps")
				css, pps := etsi014.New(pair.BURL, cssTLS), etsi014.New(pair.AURL, ppsTLS)
				led, err := ledger.Open(ctx, db)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { led.Close() })
				newPPS := func(keys SlaveKeys) *PPS {
					p, err := NewPPS(ctx, PPSConfig{DB: db, Keys: keys, MasterSAE: "css", Ledger: led, StorageKey: bytes.Repeat([]byte{5}, 32)})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { p.Close() })
					return p
				}
				batch := func() etsi014.KeyMaterial {
					ks, err := css.EncKeys(ctx, "pps", 1, 8*MaxBatchSize)
					if err != nil || len(ks) != 1 {
						t.Fatalf("enc_keys: %v", err)
					}
					return ks[0]
				}

				// Killed between the delivery and the store.
				k := batch()
				if _, err := newPPS(&dyingKeys{inner: pps}).material(ctx, k.ID); !errors.Is(err, errKilled) {
					t.Fatalf("dying PPS: %v", err)
				}
				got, err := newPPS(pps).material(ctx, k.ID)
				if window == 0 {
					if !errors.Is(err, ErrUnknownKey) {
						t.Fatalf("without redelivery the key should be lost: %v", err)
					}
				} else if err != nil || !bytes.Equal(got, k.Key) {
					t.Fatalf("the restarted PPS did not get the key back: %v", err)
				}

				// The payment request is cancelled after the delivery.
				k = batch()
				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				if got, err := newPPS(&dyingKeys{inner: pps, cancel: cancel}).material(cctx, k.ID); err != nil || !bytes.Equal(got, k.Key) {
					t.Fatalf("cancelled request: %v", err)
				}
				if got, err := newPPS(&dyingKeys{inner: pps}).storedMaterial(ctx, k.ID); err != nil || !bytes.Equal(got, k.Key) {
					t.Fatalf("the key of a cancelled request was not stored: %v", err)
				}
			})
		}
	}
}
