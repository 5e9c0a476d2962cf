// Package money holds qshield's one notion of an amount of money: ISO 4217
// currencies with their minor units, and exact conversion between the
// decimal text people type and read ("12.34", "100", "1.250") and the integer
// minor units that the ledger, the wire protocols and the HTTP API carry.
//
// There are no floating-point numbers anywhere: Parse reads digits into an
// int64 and Format writes them back, so Parse(Format(x)) == x for every int64
// x and every currency. How many decimals an amount may have is the
// currency's, not the caller's: JPY has none ("100" is ¥100, "100.5" is an
// error), KWD has three ("1.250" is 1250 fils), most have two. Text with more
// decimals than the currency has is accepted only when the extra digits are
// zeros ("100.00" JPY is ¥100); anything else would need rounding, and money
// is never rounded here.
//
// The currency table is the single list for the whole module: the CLI,
// the EMVCo codes of bioqr (numeric codes) and the QMSP wire format
// (numeric codes) all look currencies up here.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Errors returned by Lookup, Parse and ParseAmount; test with errors.Is.
var (
	ErrUnknownCurrency = errors.New("money: unknown currency")
	ErrSyntax          = errors.New("money: not a decimal amount")
	ErrPrecision       = errors.New("money: more decimals than the currency has")
	ErrRange           = errors.New("money: amount out of range")
)

// Currency is an ISO 4217 currency.
type Currency struct {
	Code    string // alphabetic code, e.g. "JPY"
	Numeric uint16 // numeric code, e.g. 392
	Digits  int    // minor-unit digits: 0 (JPY), 2 (CNY), 3 (KWD), 4 (CLF)
}

// NumericCode returns the numeric code as three digits ("036" for AUD), as
// EMVCo payloads carry it.
func (c Currency) NumericCode() string { return fmt.Sprintf("%03d", c.Numeric) }

// String returns the alphabetic code.
func (c Currency) String() string { return c.Code }

// Lookup finds a currency by its alphabetic code (any case) or its
// three-digit numeric code.
func Lookup(code string) (Currency, error) {
	code = strings.TrimSpace(code)
	if len(code) == 3 && code[0] >= '0' && code[0] <= '9' {
		n, err := strconv.ParseUint(code, 10, 16)
		if err == nil {
			if c, ok := byNumeric[uint16(n)]; ok {
				return c, nil
			}
		}
		return Currency{}, fmt.Errorf("%w: %q", ErrUnknownCurrency, code)
	}
	if c, ok := byCode[strings.ToUpper(code)]; ok {
		return c, nil
	}
	return Currency{}, fmt.Errorf("%w: %q (want an ISO 4217 code such as CNY, EUR or JPY)", ErrUnknownCurrency, code)
}

// ByNumeric finds a currency by its numeric code.
func ByNumeric(n uint16) (Currency, error) {
	if c, ok := byNumeric[n]; ok {
		return c, nil
	}
	return Currency{}, fmt.Errorf("%w: numeric code %03d", ErrUnknownCurrency, n)
}

// Currencies returns every currency in the table, in alphabetic order.
func Currencies() []Currency {
	out := make([]Currency, len(table))
	copy(out, table)
	return out
}

// Parse reads decimal text in major units ("12.34", "-0.5", "100") into
// minor units of c. It accepts an optional leading '-', digits, and at most
// one '.' followed by digits; no exponent, no digit grouping, no currency
// symbol. Leading and trailing spaces are ignored.
func (c Currency) Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	neg := false
	if strings.HasPrefix(t, "-") {
		neg, t = true, t[1:]
	}
	whole, frac, hasDot := strings.Cut(t, ".")
	if whole == "" || (hasDot && frac == "") || !digits(whole) || !digits(frac) {
		return 0, fmt.Errorf("%w: %q (want digits with an optional decimal point, e.g. %s)", ErrSyntax, s, c.Format(1234*pow10[c.Digits]/100))
	}
	if len(frac) > c.Digits {
		if strings.Trim(frac[c.Digits:], "0") != "" {
			return 0, fmt.Errorf("%w: %q has %d decimals, %s has %d", ErrPrecision, s, len(frac), c.Code, c.Digits)
		}
		frac = frac[:c.Digits]
	}
	frac += strings.Repeat("0", c.Digits-len(frac))
	// The magnitude as an unsigned integer, with overflow checks; -2^63 is
	// representable, +2^63 is not.
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	var m uint64
	for _, d := range []byte(strings.TrimLeft(whole, "0") + frac) {
		if m > (limit-uint64(d-'0'))/10 {
			return 0, fmt.Errorf("%w: %q", ErrRange, s)
		}
		m = m*10 + uint64(d-'0')
	}
	if neg {
		return int64(-m), nil // -2^63 wraps to itself
	}
	return int64(m), nil
}

// Format writes minor units of c as decimal text in major units with exactly
// c.Digits decimals: 1234 CNY → "12.34", 100 JPY → "100", -5 EUR → "-0.05".
func (c Currency) Format(minor int64) string {
	neg := minor < 0
	var m uint64
	if neg {
		m = uint64(-minor) // -2^63 stays 2^63 as uint64
	} else {
		m = uint64(minor)
	}
	s := strconv.FormatUint(m, 10)
	if c.Digits > 0 {
		if len(s) <= c.Digits {
			s = strings.Repeat("0", c.Digits-len(s)+1) + s
		}
		s = s[:len(s)-c.Digits] + "." + s[len(s)-c.Digits:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

var pow10 = [...]int64{1, 10, 100, 1000, 10000}

// Amount is a number of minor units of one currency.
type Amount struct {
	Minor    int64
	Currency Currency
}

// ParseAmount reads text in major units in the currency named by code (see
// Currency.Parse and Lookup).
func ParseAmount(text, code string) (Amount, error) {
	c, err := Lookup(code)
	if err != nil {
		return Amount{}, err
	}
	m, err := c.Parse(text)
	if err != nil {
		return Amount{}, err
	}
	return Amount{Minor: m, Currency: c}, nil
}

// ParsePositive is ParseAmount for an amount to pay or charge: it must be
// greater than zero.
func ParsePositive(text, code string) (Amount, error) {
	a, err := ParseAmount(text, code)
	if err != nil {
		return Amount{}, err
	}
	if a.Minor <= 0 {
		return Amount{}, fmt.Errorf("%w: %q must be greater than zero", ErrRange, text)
	}
	return a, nil
}

// String formats the amount with its code: "12.34 CNY", "100 JPY".
func (a Amount) String() string { return a.Currency.Format(a.Minor) + " " + a.Currency.Code }

// Format writes minor units of the currency named by code with the code
// ("12.34 CNY"). An unknown code is written as the bare integer of minor
// units, so that nothing is ever shown with a wrong decimal point.
func Format(minor int64, code string) string {
	c, err := Lookup(code)
	if err != nil {
		return strconv.FormatInt(minor, 10) + " (minor units) " + code
	}
	return Amount{Minor: minor, Currency: c}.String()
}
