package fvc

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// FVC2002SetBDigest is the Digest of the FVC2002 DB1_B–DB4_B minutiae
// records published by the OpenAFIS project (data/valid: 4 databases × 10
// fingers × 8 impressions, ISO/IEC 19794-2). Results may be compared with
// published figures for that data only when Digest matches it.
const FVC2002SetBDigest = "47514e6e0fc6133e12091c896055b9df42fc7f2d273c2b1c345fc6c67264ede0"

// Digest returns a SHA-256 digest of the *.iso records of DB1_B..DB4_B under
// root: for every record in database then file-name order, the path
// "DBn_B/name" and a newline, the length as 8 big-endian bytes, the record.
func Digest(root string) (string, error) {
	h := sha256.New()
	for d := 1; d <= 4; d++ {
		name := fmt.Sprintf("DB%d_B", d)
		entries, err := os.ReadDir(filepath.Join(root, name))
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoData, err)
		}
		var files []string
		for _, e := range entries {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".iso") {
				files = append(files, e.Name())
			}
		}
		slices.Sort(files)
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(root, name, f))
			if err != nil {
				return "", fmt.Errorf("fvc: %w", err)
			}
			h.Write([]byte(name + "/" + f + "\n"))
			h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
