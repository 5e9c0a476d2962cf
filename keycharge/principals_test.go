package keycharge_test

import (
	"errors"
	"github.com/qshield/qshield/keycharge"
	"testing"

	"github.com/qshield/qshield/pki"
	"github.com/qshield/qshield/sqldb/sqldbtest"
)

// Red-team findings: "any charger can read or abort another charger's
// charge" and "a phone the admin names charger-x can lock any key storage
// device through the PIN-failure report". Chargers are recognised by their
// principal kind, and a charge belongs to the charger that began it.
func TestChargerSeesOnlyItsOwnCharges(t *testing.T) {
	e := startEnv(t, sqldbtest.Open(t, sqldbtest.Backends()[0]), 1)
	ctx := e.ctx
	dev := e.provision("SN-OWN")
	b, err := e.lab.Charger.BeginCharge(ctx, keycharge.BeginRequest{Serial: "SN-OWN", Volume: 1024, Certificate: dev.Certificate().Raw})
	if err != nil {
		t.Fatal(err)
	}
	other := keycharge.Principal{Name: "charger-2", Role: pki.RoleApplication, Kind: pki.PrincipalCharger}
	if _, err := e.lab.QKMP.ChargeStatusOf(ctx, other, b.ChargeID); !errors.Is(err, keycharge.ErrForbidden) {
		t.Fatalf("another charger reads the charge: %v", err)
	}
	if _, err := e.lab.QKMP.AbortCharge(ctx, other, b.ChargeID, "mine now"); !errors.Is(err, keycharge.ErrForbidden) {
		t.Fatalf("another charger aborts the charge: %v", err)
	}
	if st, err := e.lab.Charger.ChargeStatus(ctx, b.ChargeID); err != nil || st.State != keycharge.ChargeChallenged {
		t.Fatalf("the owner's view: %+v %v", st, err)
	}
	admin := keycharge.Principal{Name: "qshield-admin", Role: pki.RoleClient, Kind: pki.PrincipalAdmin}
	if _, err := e.lab.QKMP.ChargeStatusOf(ctx, admin, b.ChargeID); err != nil {
		t.Fatalf("administrator: %v", err)
	}
	// Names do not make a charger: a phone named like one is refused.
	phone := keycharge.Principal{Name: "charger-x", Role: pki.RoleClient, Kind: pki.PrincipalPhone}
	if _, err := e.lab.QKMP.ReportPINFailure(ctx, phone, "SN-OWN"); !errors.Is(err, keycharge.ErrForbidden) {
		t.Fatalf("phone named charger-x reports a PIN failure: %v", err)
	}
	if _, err := e.lab.QKMP.Devices(ctx, keycharge.Principal{Name: "qshield-admin", Role: pki.RoleClient, Kind: pki.PrincipalPhone}, 10); !errors.Is(err, keycharge.ErrForbidden) {
		t.Fatalf("phone named qshield-admin lists devices: %v", err)
	}
}
