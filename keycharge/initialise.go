package keycharge

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/qshield/qshield/keycharge/device"
)

// Initialise runs the initialise transition for an opened device and
// installs the issued certificate in it.
func Initialise(ctx context.Context, admin *Client, dev *device.Device) error {
	pubDER, err := x509.MarshalPKIXPublicKey(dev.PublicKey())
	if err != nil {
		return err
	}
	encDER, err := x509.MarshalPKIXPublicKey(dev.EncryptionPublicKey())
	if err != nil {
		return err
	}
	serial := dev.Info().Serial
	proof, err := dev.Signer().Sign(rand.Reader, InitialiseDigest(serial, pubDER, encDER), nil)
	if err != nil {
		return err
	}
	res, err := admin.Transition(ctx, serial, TransitionRequest{Action: ActInitialise, PublicKey: pubDER, EncryptionKey: encDER, Proof: proof})
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(res.CertDER)
	if err != nil {
		return fmt.Errorf("keycharge: issued certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(dev.PublicKey()) {
		return errors.New("keycharge: the platform certified another key")
	}
	if enc, err := DeviceEncryptionKey(cert); err != nil || !enc.Equal(dev.EncryptionPublicKey()) {
		return errors.New("keycharge: the platform registered another encryption key")
	}
	return dev.InstallCertificate(cert)
}
