package channel

import (
	"crypto/cipher"

	"github.com/emmansun/gmsm/sm4"
)

func smBlock(key []byte) (cipher.Block, error) { return sm4.NewCipher(key) }
