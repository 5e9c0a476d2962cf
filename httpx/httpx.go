// Package httpx holds the HTTP conventions every qshield API follows: JSON
// bodies with a size limit and no unknown fields, errors as RFC 9457
// application/problem+json with a stable machine-readable code, and the
// Idempotency-Key header on money-moving POSTs.
//
// Failures that are not the caller's fault are split by [WriteError]: the
// database or the node could not serve the request (connection lost,
// timeout, disk full: see sqldb.IsUnavailable) is 503 "unavailable" with
// Retry-After, anything else is a bug, 500 "internal"; both are logged with
// their cause and the request ID that the server put in the request's
// context ([RequestInfo]) and that every problem carries.
//
// [Idempotency] stores each keyed POST's response, refusals included, in an
// [IdempotencyStore] ([SQLStore] shares it between every node of one
// database) and replays it for a retry with the same key.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxBody is the default request body limit (64 KiB).
const MaxBody = 64 << 10

// Problem is an RFC 9457 problem details object. Code is qshield's stable
// machine-readable error code (e.g. "insufficient_funds").
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Code     string `json:"code"`
	// RequestID is the server's ID of the request (also in X-Request-ID);
	// quote it when reporting a problem.
	RequestID string `json:"request_id,omitempty"`
}

// Error makes a Problem usable as an error (e.g. from a client).
func (p *Problem) Error() string {
	return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail)
}

// WriteProblem writes a problem+json response. Handlers with sentinel
// errors write them through a Registry instead.
func WriteProblem(w http.ResponseWriter, r *http.Request, status int, code, detail string) {
	p := Problem{
		Type:   problemType(code),
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	}
	stamp(r, &p)
	writeProblem(w, p)
}

// stamp fills in the request's path and ID and records the problem code
// for the access log and metrics.
func stamp(r *http.Request, p *Problem) {
	if r == nil {
		return
	}
	p.Instance = r.URL.Path
	if ri := RequestInfoFrom(r.Context()); ri != nil {
		p.RequestID = ri.ID
		ri.setProblem(p.Code)
	}
}

func problemType(code string) string { return "https://qshield.dev/problems/" + code }

func writeProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// ProblemContentType is the media type of an RFC 9457 problem document.
const ProblemContentType = "application/problem+json"

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// DecodeError is a request body that could not be decoded; Status is 400, 413 or 415.
type DecodeError struct {
	Status int
	Code   string
	Err    error
}

func (e *DecodeError) Error() string { return e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// Decode reads one JSON value from r's body into v: at most max bytes (MaxBody
// when max <= 0), Content-Type application/json (or absent), no unknown
// fields, nothing after the value.
func Decode(r *http.Request, max int64, v any) error {
	if max <= 0 {
		max = MaxBody
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt := strings.TrimSpace(strings.ToLower(strings.SplitN(ct, ";", 2)[0]))
		if mt != "application/json" {
			return &DecodeError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Err: fmt.Errorf("content type %q is not application/json", mt)}
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &DecodeError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Err: fmt.Errorf("request body larger than %d bytes", max)}
		}
		return &DecodeError{Status: http.StatusBadRequest, Code: "malformed_json", Err: fmt.Errorf("read body: %w", err)}
	}
	return DecodeBytes(data, v)
}

// DecodeBytes decodes one JSON value from data into v with Decode's rules:
// no unknown fields, nothing after the value, and no object with the same
// key twice (which parsers resolve differently: the first or the last wins).
func DecodeBytes(data []byte, v any) error {
	if err := CheckDuplicateKeys(data); err != nil {
		return &DecodeError{Status: http.StatusBadRequest, Code: "malformed_json", Err: err}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return &DecodeError{Status: http.StatusBadRequest, Code: "malformed_json", Err: errors.New("empty request body")}
		}
		return &DecodeError{Status: http.StatusBadRequest, Code: "malformed_json", Err: fmt.Errorf("malformed JSON: %w", err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &DecodeError{Status: http.StatusBadRequest, Code: "malformed_json", Err: errors.New("malformed JSON: data after the JSON value")}
	}
	return nil
}

// maxDepth bounds the nesting CheckDuplicateKeys follows.
const maxDepth = 64

// CheckDuplicateKeys reports an error when a JSON object in data has the
// same key twice (compared after unescaping). Malformed JSON is left to the
// decoder.
func CheckDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		obj    bool
		keys   map[string]bool
		expKey bool // in an object, the next string token is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF, or malformed: the decoder reports it
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if len(stack) > 0 && stack[len(stack)-1].obj {
					stack[len(stack)-1].expKey = true
				}
				if len(stack) >= maxDepth {
					return fmt.Errorf("JSON nested deeper than %d levels", maxDepth)
				}
				stack = append(stack, frame{obj: d == '{', keys: map[string]bool{}, expKey: d == '{'})
			case '}', ']':
				if len(stack) == 0 {
					return nil
				}
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].obj {
					stack[len(stack)-1].expKey = true
				}
			}
			continue
		}
		if len(stack) == 0 || !stack[len(stack)-1].obj {
			continue
		}
		top := &stack[len(stack)-1]
		if top.expKey {
			k, _ := tok.(string)
			if top.keys[k] {
				return fmt.Errorf("duplicate JSON key %q", k)
			}
			top.keys[k] = true
			top.expKey = false
		} else {
			top.expKey = true
		}
	}
}

// DecodeOrProblem decodes like Decode and, on failure, writes the problem
// response and returns false.
func DecodeOrProblem(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	if err := Decode(r, max, v); err != nil {
		var de *DecodeError
		if errors.As(err, &de) {
			WriteProblem(w, r, de.Status, de.Code, de.Error())
		} else {
			WriteProblem(w, r, http.StatusBadRequest, "malformed_json", err.Error())
		}
		return false
	}
	return true
}

// IdempotencyHeader is the header a money-moving POST must carry.
const IdempotencyHeader = "Idempotency-Key"

// IdempotencyKey returns the request's Idempotency-Key, or writes a 400 problem
// and returns false when it is missing or not 1–128 printable ASCII characters.
func IdempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	k := r.Header.Get(IdempotencyHeader)
	if k == "" {
		WriteProblem(w, r, http.StatusBadRequest, "idempotency_key_required", "the Idempotency-Key header is required on this request")
		return "", false
	}
	if len(k) > 128 {
		WriteProblem(w, r, http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key is longer than 128 characters")
		return "", false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			WriteProblem(w, r, http.StatusBadRequest, "invalid_idempotency_key", "Idempotency-Key must be printable ASCII without spaces")
			return "", false
		}
	}
	return k, true
}
