package httpx

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// Code is one entry of an error-code registry: a stable machine-readable
// code, the HTTP status it is served with, a short message that is safe to
// show a payer (it never carries request data), and the sentinel error that
// maps to it (nil for codes only the transport produces).
type Code struct {
	Code    string
	Status  int
	Message string
	Err     error
}

// Registry maps errors to problem responses (server side) and problem codes
// back to sentinel errors (client side), so errors.Is works across HTTP.
// Every handler writes its errors through a Registry; every Registry holds
// the transport codes in [Common]. A Registry is immutable once built.
type Registry struct {
	codes  []Code
	byCode map[string]Code
}

// Codes every API shares; NewRegistry adds them to every registry.
var commonCodes = []Code{
	{Code: CodeInternal, Status: http.StatusInternalServerError, Message: "Something went wrong on our side; nothing was charged. Please try again."},
	{Code: CodeCancelled, Status: http.StatusServiceUnavailable, Message: "The request was cancelled before it finished; nothing was charged."},
	{Code: "malformed_json", Status: http.StatusBadRequest, Message: "The request could not be read."},
	{Code: "body_too_large", Status: http.StatusRequestEntityTooLarge, Message: "The request is too large."},
	{Code: "unsupported_media_type", Status: http.StatusUnsupportedMediaType, Message: "The request is not in a format this service accepts."},
	{Code: "idempotency_key_required", Status: http.StatusBadRequest, Message: "The request is missing its Idempotency-Key."},
	{Code: "invalid_idempotency_key", Status: http.StatusBadRequest, Message: "The request's Idempotency-Key is not valid."},
	{Code: "client_certificate_required", Status: http.StatusUnauthorized, Message: "This service needs a device certificate from the platform."},
	{Code: "forbidden", Status: http.StatusForbidden, Message: "This device is not allowed to do that."},
	{Code: "not_found", Status: http.StatusNotFound, Message: "That was not found."},
	{Code: "rate_limited", Status: http.StatusTooManyRequests, Message: "Too many requests; please wait and try again."},
	{Code: CodeUnavailable, Status: http.StatusServiceUnavailable, Message: "The service is temporarily unavailable; please try again shortly."},
	{Code: "overloaded", Status: http.StatusServiceUnavailable, Message: "The service is busy; please try again shortly."},
	{Code: "idempotency_in_progress", Status: http.StatusConflict, Message: "The same request is still being processed; please try again shortly."},
}

// Codes of the transport itself.
const (
	CodeInternal    = "internal"
	CodeCancelled   = "cancelled"
	CodeUnavailable = "unavailable"
)

// Common returns the transport codes every registry holds.
func Common() []Code { return slices.Clone(commonCodes) }

// NewRegistry returns a registry of the common codes and codes. Two entries
// with the same code must agree on status and message (several sentinels may
// share a code); a code that conflicts with another is a programming error
// and NewRegistry panics, as http.ServeMux does on conflicting patterns.
func NewRegistry(codes ...Code) *Registry {
	r := &Registry{byCode: make(map[string]Code)}
	for _, c := range append(Common(), codes...) {
		if c.Code == "" || c.Status < 400 || c.Status > 599 || c.Message == "" {
			panic(fmt.Sprintf("httpx: registry entry %q needs a code, a 4xx/5xx status and a message", c.Code))
		}
		if prev, ok := r.byCode[c.Code]; ok {
			if prev.Status != c.Status || prev.Message != c.Message {
				panic(fmt.Sprintf("httpx: code %q registered twice with different status or message", c.Code))
			}
			if prev.Err == nil {
				r.byCode[c.Code] = c
			}
		} else {
			r.byCode[c.Code] = c
		}
		r.codes = append(r.codes, c)
	}
	return r
}

// Codes returns the registry's entries in registration order.
func (r *Registry) Codes() []Code { return slices.Clone(r.codes) }

// Lookup returns the entry of the first registered sentinel that err
// matches (errors.Is).
func (r *Registry) Lookup(err error) (Code, bool) {
	if err == nil {
		return Code{}, false
	}
	for _, c := range r.codes {
		if c.Err != nil && errors.Is(err, c.Err) {
			return c, true
		}
	}
	return Code{}, false
}

// ByCode returns the entry for a problem code.
func (r *Registry) ByCode(code string) (Code, bool) {
	c, ok := r.byCode[code]
	return c, ok
}

// CodeOf returns the problem code for err: its registered code, "cancelled"
// for a cancelled or timed-out context, "internal" otherwise.
func (r *Registry) CodeOf(err error) string {
	return r.entryFor(err).Code
}

func (r *Registry) entryFor(err error) Code {
	if c, ok := r.Lookup(err); ok {
		return c
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return r.byCode[CodeCancelled]
	}
	return r.byCode[CodeInternal]
}

// Problem returns the problem document for err. A registered error's
// detail is err.Error() (the caller's own request went wrong, so the
// details are theirs); an unregistered error is "internal" and its text is
// not disclosed.
func (r *Registry) Problem(err error) Problem {
	c := r.entryFor(err)
	p := Problem{Type: problemType(c.Code), Title: c.Message, Status: c.Status, Code: c.Code}
	switch c.Code {
	case CodeInternal:
		p.Detail = "internal error"
	case CodeCancelled:
		p.Detail = "request cancelled"
	default:
		p.Detail = err.Error()
	}
	return p
}

// Write writes err as a problem+json response (see Problem). An error that
// is not a registered refusal goes to [WriteError]: 503 "unavailable" with
// Retry-After when the database or the node failed, 500 "internal"
// otherwise, both logged with their cause and the request ID.
func (r *Registry) Write(w http.ResponseWriter, req *http.Request, err error) {
	if _, ok := r.Lookup(err); !ok && req != nil {
		WriteError(w, req, err)
		return
	}
	p := r.Problem(err)
	stamp(req, &p)
	writeProblem(w, p)
}

// WriteCode writes the registered problem code with detail; an unknown
// code is written as "internal".
func (r *Registry) WriteCode(w http.ResponseWriter, req *http.Request, code, detail string) {
	c, ok := r.byCode[code]
	if !ok {
		c, detail = r.byCode[CodeInternal], "internal error"
	}
	p := Problem{Type: problemType(c.Code), Title: c.Message, Status: c.Status, Code: c.Code, Detail: detail}
	stamp(req, &p)
	writeProblem(w, p)
}

// Sentinel returns the sentinel error registered for a problem code (nil
// when the code has none or is unknown).
func (r *Registry) Sentinel(code string) error {
	if r == nil {
		return nil
	}
	return r.byCode[code].Err
}
