package fingerprint_test

import (
	"fmt"

	"github.com/qshield/qshield/fingerprint"
)

// Enrol one impression, verify another: parse (or build) templates, prepare
// them once, then compare prepared templates as often as needed.
func Example() {
	enrolled, err := fingerprint.Synthetic(1, 7, 1).MarshalISO() // an ISO 19794-2 record
	if err != nil {
		panic(err)
	}
	t, err := fingerprint.ParseISO(enrolled)
	if err != nil {
		panic(err) // errors.Is(err, fingerprint.ErrFormat) for a malformed record
	}
	m := fingerprint.NewMatcher()
	ref := m.Prepare(t)

	same, _ := m.Verify(ref, m.Prepare(fingerprint.Synthetic(1, 7, 2)))
	other, _ := m.Verify(ref, m.Prepare(fingerprint.Synthetic(1, 8, 2)))
	fmt.Println(same, other)
	// Output: true false
}
