// Package etsi014 is a client for the ETSI GS QKD 014 V1.1.1 REST key delivery
// API, and the JSON data formats that API exchanges.
//
// A secure application entity (SAE) calls its local key management entity
// (KME) over HTTPS with mutual TLS; the KME knows the caller from its client
// certificate. The master SAE asks for new keys with [Client.EncKeys] and
// sends their key IDs to the slave SAE by any channel; the slave SAE fetches
// the same keys from its own KME with [Client.DecKeys]. Each key is delivered
// once to each of them.
//
// The types below carry the exact field names of the specification
// (clause 6): Status, Key request, Key container, Key IDs and Error. Sizes are
// in bits. Errors from the KME are returned as *[Error], which carries the
// HTTP status, and match [ErrBadRequest], [ErrUnauthorized] or
// [ErrUnavailable] with errors.Is.
package etsi014

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// APIPrefix is the path every ETSI 014 call lives under.
const APIPrefix = "/api/v1/keys/"

// Status is the Status data format (clause 6.1).
type Status struct {
	SourceKMEID      string          `json:"source_KME_ID"`
	TargetKMEID      string          `json:"target_KME_ID"`
	MasterSAEID      string          `json:"master_SAE_ID"`
	SlaveSAEID       string          `json:"slave_SAE_ID"`
	KeySize          int             `json:"key_size"`
	StoredKeyCount   int             `json:"stored_key_count"`
	MaxKeyCount      int             `json:"max_key_count"`
	MaxKeyPerRequest int             `json:"max_key_per_request"`
	MaxKeySize       int             `json:"max_key_size"`
	MinKeySize       int             `json:"min_key_size"`
	MaxSAEIDCount    int             `json:"max_SAE_ID_count"`
	StatusExtension  json.RawMessage `json:"status_extension,omitempty"`
}

// KeyRequest is the Key request data format (clause 6.2), the body of a POST
// to enc_keys. Nil Number and Size mean the KME's defaults (1 key of
// key_size bits).
type KeyRequest struct {
	Number                *int              `json:"number,omitempty"`
	Size                  *int              `json:"size,omitempty"`
	AdditionalSlaveSAEIDs []string          `json:"additional_slave_SAE_IDs,omitempty"`
	ExtensionMandatory    []json.RawMessage `json:"extension_mandatory,omitempty"`
	ExtensionOptional     []json.RawMessage `json:"extension_optional,omitempty"`
}

// KeyContainer is the Key container data format (clause 6.3).
type KeyContainer struct {
	Keys                  []Key           `json:"keys"`
	KeyContainerExtension json.RawMessage `json:"key_container_extension,omitempty"`
}

// Key is one element of KeyContainer.Keys: the key ID (a UUID) and the key
// bytes in standard base64.
type Key struct {
	KeyID          string          `json:"key_ID"`
	KeyIDExtension json.RawMessage `json:"key_ID_extension,omitempty"`
	Key            string          `json:"key"`
	KeyExtension   json.RawMessage `json:"key_extension,omitempty"`
}

// KeyIDs is the Key IDs data format (clause 6.4), the body of a POST to
// dec_keys.
type KeyIDs struct {
	KeyIDs          []KeyID         `json:"key_IDs"`
	KeyIDsExtension json.RawMessage `json:"key_IDs_extension,omitempty"`
}

// KeyID is one element of KeyIDs.KeyIDs.
type KeyID struct {
	KeyID          string          `json:"key_ID"`
	KeyIDExtension json.RawMessage `json:"key_ID_extension,omitempty"`
}

// Sentinel errors matched (errors.Is) by an *Error with the corresponding
// HTTP status.
var (
	ErrBadRequest   = errors.New("etsi014: bad request format (400)")
	ErrUnauthorized = errors.New("etsi014: unauthorized (401)")
	ErrUnavailable  = errors.New("etsi014: error on the KME side (503)")
)

// Error is the Error data format (clause 6.5) together with the HTTP status
// it came with. It is the error type the client returns for a non-200 answer.
type Error struct {
	StatusCode int              `json:"-"`
	Message    string           `json:"message"`
	Details    []map[string]any `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if len(e.Details) > 0 {
		d, _ := json.Marshal(e.Details)
		return fmt.Sprintf("etsi014: %d %s: %s %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message, d)
	}
	return fmt.Sprintf("etsi014: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Is matches the sentinel of e's status code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrUnavailable:
		return e.StatusCode == http.StatusServiceUnavailable
	}
	return false
}
