package audit

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// LoadSigner reads an existing checkpoint signing key (a signed-note
// Ed25519 private key) from keyFile and returns it with its verifier key;
// unlike LoadOrCreateSigner it creates and writes nothing.
func LoadSigner(keyFile string) (note.Signer, string, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, "", fmt.Errorf("audit: read checkpoint key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("audit: checkpoint key %s: %w", keyFile, err)
	}
	vkey, err := verifierOf(skey)
	if err != nil {
		return nil, "", fmt.Errorf("audit: checkpoint key %s: %w", keyFile, err)
	}
	return signer, vkey, nil
}
