// Command extmod exercises qshield's library packages from another module:
// a ledger transfer audited in the same transaction, a CA issuing a
// certificate, ETSI 014 and KME types, secret sharing, the convolutional
// code, an EMVCo payload, an amount of money and a fingerprint matcher.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/qshield/qshield/audit"
	"github.com/qshield/qshield/bioqr/emvqr"
	"github.com/qshield/qshield/convcode"
	"github.com/qshield/qshield/fingerprint"
	"github.com/qshield/qshield/httpx"
	"github.com/qshield/qshield/kme"
	"github.com/qshield/qshield/kme/etsi014"
	"github.com/qshield/qshield/ledger"
	"github.com/qshield/qshield/money"
	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/qkd"
	"github.com/qshield/qshield/qkd/bb84"
	"github.com/qshield/qshield/qkd/cascade"
	"github.com/qshield/qshield/qkd/decoy"
	"github.com/qshield/qshield/qkd/link"
	"github.com/qshield/qshield/qkd/privacy"
	"github.com/qshield/qshield/shamir"
	"github.com/qshield/qshield/sqldb"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("ok")
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "extmod")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sqldb.Open(ctx, filepath.Join(dir, "ext.db"))
	if err != nil {
		return err
	}
	defer db.Close()

	// Money moves and is audited in one transaction.
	led, err := ledger.Open(ctx, db)
	if err != nil {
		return err
	}
	defer led.Close()
	trail, err := audit.Open(ctx, db)
	if err != nil {
		return err
	}
	for _, a := range []ledger.NewAccount{
		{ID: "bank", Owner: "bank", Kind: ledger.KindSystem, Currency: "EUR", AllowNegative: true},
		{ID: "alice", Owner: "alice", Kind: ledger.KindUser, Currency: "EUR"},
	} {
		if _, err := led.CreateAccount(ctx, a); err != nil {
			return err
		}
	}
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		t, err := led.TransferTx(ctx, tx, ledger.TransferRequest{IdempotencyKey: "ext-1", From: "bank", To: "alice", Amount: 1234, Currency: "EUR"})
		if err != nil {
			return err
		}
		_, err = trail.AppendTx(ctx, tx, audit.Entry{Actor: "extmod", Event: "ext.fund", Outcome: "success", Origin: "extmod", Resource: t.ID})
		return err
	})
	if err != nil {
		return err
	}

	// A CA issues a device certificate.
	enc, err := pki.RawKey(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		return err
	}
	ca, err := pki.OpenOrCreateCA(ctx, db, "ext", pki.Options{}, enc)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if _, err := ca.Issue(ctx, pki.IssueRequest{Role: pki.RoleDevice, CommonName: "ext-device", PublicKey: key.Public()}); err != nil {
		return err
	}

	// KME and QKD types are usable from outside.
	var _ func(context.Context, *sqldb.DB, kme.PairConfig) (*kme.Pair, error) = kme.StartPair
	var _ *etsi014.Client = etsi014.New("https://kme.example", nil)
	var _ = []any{qkd.RandomKeys, bb84.Words, cascade.BlockSizes, decoy.H, link.Pipe, privacy.MulGF64}

	// Secret sharing, the convolutional code, EMVCo, fingerprints, HTTP.
	shares, err := shamir.Split([]byte("secret"), 2, 3, nil)
	if err != nil {
		return err
	}
	if s, err := shamir.Combine(shares[1:]); err != nil || string(s) != "secret" {
		return fmt.Errorf("shamir: %q %v", s, err)
	}
	msg := []byte{1, 0, 1, 1}
	if m, err := convcode.Decode(convcode.HardToSoft(convcode.Encode(msg))); err != nil || !bytes.Equal(m, msg) {
		return fmt.Errorf("convcode: %v %v", m, err)
	}
	if err := emvqr.CheckAmount("12.34"); err != nil {
		return err
	}
	if a, err := money.ParsePositive("100", "JPY"); err != nil || a.Minor != 100 || a.String() != "100 JPY" {
		return fmt.Errorf("money: %v %v", a, err)
	}
	_ = fingerprint.NewMatcher().Threshold()
	_ = httpx.NewRegistry()
	return nil
}
