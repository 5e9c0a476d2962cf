// Package emvqr reads and writes EMVCo merchant-presented QR payloads (EMV QR
// Code Specification for Payment Systems, Merchant-Presented Mode): a string
// of data objects "ID LEN VALUE" (two decimal digits each for ID and length)
// closed by the CRC object "63" "04" and four upper-case hexadecimal digits of
// CRC-16/CCITT-FALSE computed over everything before them, "6304" included.
//
// The package is deliberately strict where open parsers are known to be
// sloppy: the CRC must be exactly four upper-case hex digits (leading zeros
// kept), the payload format indicator must come first and the CRC last, IDs
// must not repeat at one level, primitive merchant account fields 02–25 are
// never parsed as templates, and values are limited to printable ASCII (the
// alphanumeric-special set; the language template's local-script names are
// not supported). Parse never panics; everything it refuses wraps ErrFormat
// or ErrCRC.
package emvqr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors returned by this package.
var (
	// ErrFormat is wrapped by every structural error.
	ErrFormat = errors.New("emvqr: malformed payload")
	// ErrCRC means the payload is well formed but its CRC does not match.
	ErrCRC = errors.New("emvqr: CRC mismatch")
)

// MaxPayload is the longest payload accepted (EMVCo caps a payload at 512
// characters).
const MaxPayload = 512

// Well-known top-level IDs.
const (
	IDPayloadFormat     = "00"
	IDPointOfInitiation = "01"
	IDMerchantCategory  = "52"
	IDCurrency          = "53"
	IDAmount            = "54"
	IDCountry           = "58"
	IDMerchantName      = "59"
	IDMerchantCity      = "60"
	IDPostalCode        = "61"
	IDAdditionalData    = "62"
	IDCRC               = "63"
	IDLanguageTemplate  = "64"
	PointOfInitStatic   = "11"
	PointOfInitDynamic  = "12"
	SubGUI              = "00" // globally unique identifier inside templates 26–51 and 80–99
	SubBillNumber       = "01" // inside template 62
	SubReferenceLabel   = "05"
	SubTerminalLabel    = "07"
	maxValueLen         = 99
	crcObjectHeader     = "6304"
	crcObjectLen        = 8
)

// DataObject is one ID/value pair.
type DataObject struct {
	ID    string
	Value string
}

// CRC16 returns CRC-16/CCITT-FALSE of data: polynomial 0x1021, initial value
// 0xFFFF, no reflection, no final XOR ("123456789" → 0x29B1).
func CRC16(data []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, b := range data {
		crc ^= uint16(b) << 8
		for i := 0; i < 8; i++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// IsTemplate reports whether a top-level ID holds nested data objects:
// merchant account templates 26–51, the additional data template 62, the
// language template 64 and the unreserved templates 80–99.
func IsTemplate(id string) bool {
	n, err := strconv.Atoi(id)
	if err != nil || len(id) != 2 {
		return false
	}
	return (n >= 26 && n <= 51) || n == 62 || n == 64 || (n >= 80 && n <= 99)
}

func checkID(id string) error {
	if len(id) != 2 || id[0] < '0' || id[0] > '9' || id[1] < '0' || id[1] > '9' {
		return formatErr("ID %q is not two decimal digits", id)
	}
	return nil
}

func checkValue(id, v string) error {
	if len(v) == 0 || len(v) > maxValueLen {
		return formatErr("object %s has length %d, want 1..%d", id, len(v), maxValueLen)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return formatErr("object %s contains a byte 0x%02x outside printable ASCII", id, v[i])
		}
	}
	return nil
}

// AppendObject appends the encoding of one data object to b.
func AppendObject(b []byte, id, value string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return b, err
	}
	if err := checkValue(id, value); err != nil {
		return b, err
	}
	b = append(b, id...)
	b = append(b, byte('0'+len(value)/10), byte('0'+len(value)%10))
	return append(b, value...), nil
}

// EncodeObjects encodes data objects in order, with no CRC (for template
// values). IDs must not repeat.
func EncodeObjects(objs []DataObject) (string, error) {
	var b []byte
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.ID] {
			return "", formatErr("ID %s given twice", o.ID)
		}
		seen[o.ID] = true
		var err error
		if b, err = AppendObject(b, o.ID, o.Value); err != nil {
			return "", err
		}
	}
	return string(b), nil
}

// Encode builds a complete payload: objs (which must start with the payload
// format indicator "00" = "01" and must not contain the CRC) followed by the
// CRC object. The result is checked with Parse before it is returned.
func Encode(objs []DataObject) (string, error) {
	if len(objs) == 0 || objs[0].ID != IDPayloadFormat || objs[0].Value != "01" {
		return "", formatErr("the payload format indicator 00=01 must come first")
	}
	for _, o := range objs {
		if o.ID == IDCRC {
			return "", formatErr("the CRC object is added by Encode")
		}
	}
	body, err := EncodeObjects(objs)
	if err != nil {
		return "", err
	}
	body += crcObjectHeader
	out := body + fmt.Sprintf("%04X", CRC16([]byte(body)))
	if _, err := Parse(out); err != nil {
		return "", err
	}
	return out, nil
}

// ParseObjects splits s into data objects (one level, no CRC handling).
func ParseObjects(s string) ([]DataObject, error) {
	var out []DataObject
	seen := map[string]bool{}
	for i := 0; i < len(s); {
		if len(s)-i < 4 {
			return nil, formatErr("truncated data object header at offset %d", i)
		}
		id := s[i : i+2]
		if err := checkID(id); err != nil {
			return nil, err
		}
		l := s[i+2 : i+4]
		if l[0] < '0' || l[0] > '9' || l[1] < '0' || l[1] > '9' {
			return nil, formatErr("length %q of object %s is not two decimal digits", l, id)
		}
		n := int(l[0]-'0')*10 + int(l[1]-'0')
		if n == 0 {
			return nil, formatErr("object %s has length 0", id)
		}
		if i+4+n > len(s) {
			return nil, formatErr("object %s of length %d overruns the payload", id, n)
		}
		v := s[i+4 : i+4+n]
		if err := checkValue(id, v); err != nil {
			return nil, err
		}
		if seen[id] {
			return nil, formatErr("ID %s appears twice", id)
		}
		seen[id] = true
		out = append(out, DataObject{ID: id, Value: v})
		i += 4 + n
	}
	return out, nil
}

// Payload is a parsed, CRC-checked payload.
type Payload struct {
	// Objects are the top-level data objects in order, without the CRC.
	Objects []DataObject
	// Raw is the full payload string.
	Raw string
}

// Get returns the value of a top-level ID.
func (p *Payload) Get(id string) (string, bool) {
	for _, o := range p.Objects {
		if o.ID == id {
			return o.Value, true
		}
	}
	return "", false
}

// Template parses the template at a top-level ID.
func (p *Payload) Template(id string) ([]DataObject, bool, error) {
	v, ok := p.Get(id)
	if !ok {
		return nil, false, nil
	}
	if !IsTemplate(id) {
		return nil, true, formatErr("object %s is not a template", id)
	}
	objs, err := ParseObjects(v)
	return objs, true, err
}

// Offset returns the offset in Raw at which the top-level object id starts,
// or -1.
func (p *Payload) Offset(id string) int {
	i := 0
	for _, o := range p.Objects {
		if o.ID == id {
			return i
		}
		i += 4 + len(o.Value)
	}
	return -1
}

// Lookup returns the value of sub-object sub in a template's objects.
func Lookup(objs []DataObject, sub string) (string, bool) {
	for _, o := range objs {
		if o.ID == sub {
			return o.Value, true
		}
	}
	return "", false
}

// Parse checks and splits a payload: at most MaxPayload printable ASCII
// characters, "000201" first, "6304" + CRC last, the CRC right, no repeated
// IDs, every template (26–51, 62, 64, 80–99) well formed and, for 26–51 and
// 80–99, starting with its globally unique identifier 00, a point of
// initiation of 11 or 12 when present, and the mandatory objects 52, 53, 58,
// 59 and 60 present.
func Parse(s string) (*Payload, error) {
	if len(s) > MaxPayload {
		return nil, formatErr("payload of %d characters exceeds %d", len(s), MaxPayload)
	}
	if len(s) < 6+crcObjectLen || s[:6] != "000201" {
		return nil, formatErr("payload must start with the payload format indicator 000201")
	}
	if s[len(s)-crcObjectLen:len(s)-4] != crcObjectHeader {
		return nil, formatErr("payload must end with the CRC object 6304XXXX")
	}
	objs, err := ParseObjects(s)
	if err != nil {
		return nil, err
	}
	last := objs[len(objs)-1]
	if last.ID != IDCRC || len(last.Value) != 4 {
		return nil, formatErr("the CRC object is not last")
	}
	for _, c := range []byte(last.Value) {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return nil, formatErr("CRC %q is not four upper-case hexadecimal digits", last.Value)
		}
	}
	want := fmt.Sprintf("%04X", CRC16([]byte(s[:len(s)-4])))
	if last.Value != want {
		return nil, fmt.Errorf("%w: payload says %s, computed %s", ErrCRC, last.Value, want)
	}
	p := &Payload{Objects: objs[:len(objs)-1], Raw: s}
	for _, o := range p.Objects {
		if !IsTemplate(o.ID) {
			continue
		}
		sub, err := ParseObjects(o.Value)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", o.ID, err)
		}
		n, _ := strconv.Atoi(o.ID)
		if (n >= 26 && n <= 51) || n >= 80 {
			if len(sub) == 0 || sub[0].ID != SubGUI {
				return nil, formatErr("template %s does not start with its globally unique identifier 00", o.ID)
			}
		}
	}
	if v, ok := p.Get(IDPointOfInitiation); ok && v != PointOfInitStatic && v != PointOfInitDynamic {
		return nil, formatErr("point of initiation %q is neither 11 nor 12", v)
	}
	for _, id := range []string{IDMerchantCategory, IDCurrency, IDCountry, IDMerchantName, IDMerchantCity} {
		if _, ok := p.Get(id); !ok {
			return nil, formatErr("mandatory object %s is missing", id)
		}
	}
	if v, _ := p.Get(IDCurrency); len(v) != 3 || strings.Trim(v, "0123456789") != "" {
		return nil, formatErr("currency %q is not an ISO 4217 numeric code", v)
	}
	if v, ok := p.Get(IDAmount); ok {
		if err := checkAmount(v); err != nil {
			return nil, err
		}
	}
	if v, _ := p.Get(IDMerchantName); len(v) > 25 {
		return nil, formatErr("merchant name longer than 25 characters")
	}
	if v, _ := p.Get(IDMerchantCity); len(v) > 15 {
		return nil, formatErr("merchant city longer than 15 characters")
	}
	return p, nil
}

func checkAmount(v string) error {
	if len(v) > 13 {
		return formatErr("amount %q longer than 13 characters", v)
	}
	digits, dot := 0, 0
	for _, c := range []byte(v) {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dot++
		default:
			return formatErr("amount %q has a character other than digits and '.'", v)
		}
	}
	if digits == 0 || dot > 1 || v[0] == '.' {
		return formatErr("amount %q is not a decimal number", v)
	}
	return nil
}

// CheckAmount reports whether v is a valid transaction amount field (ID
// 54): up to 13 characters of digits with at most one '.', not starting with
// '.'. How many decimals the currency allows, and the value in minor units,
// are the money package's business (money.Currency.Parse and Format).
func CheckAmount(v string) error { return checkAmount(v) }
