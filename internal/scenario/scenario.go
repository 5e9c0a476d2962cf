// Package scenario holds the end-to-end scheme scenarios that `qshield demo`
// runs (each scheme's normal flow and the attacks it must refuse). They are
// harnesses, not library code: they moved here from the scheme packages so
// that the libraries carry no demo rigs, and they use only the schemes'
// exported APIs, as any other program would. The selfverify scenario (seed
// 002) forges its attacks through selfverify's public message layer
// (FirstPaymentMessage, the SigningBytes methods) and a wrapping VendorAPI,
// not through the package's internals.
package scenario

// Step is one row of a scenario.
type Step struct {
	Step    string `json:"step"`
	Outcome string `json:"outcome"` // "ok", or "refused" for an attack the platform must refuse
	Detail  string `json:"detail"`
}
