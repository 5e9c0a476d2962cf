package console

import (
	"errors"
	"fmt"

	"github.com/qshield/qshield/money"
)

// formatMoney shows minor units of cur in major units with the code
// ("12.34 CNY", "100 JPY"); the money package holds the one ISO 4217 table.
func formatMoney(minor int64, cur string) string { return money.Format(minor, cur) }

func signedMoney(minor int64, cur string) string { return formatMoney(minor, cur) }

// formError is a message for the person filling in a form: a sentence,
// shown as it is.
type formError string

func (e formError) Error() string { return string(e) }

// parseMoney reads what an operator typed into minor units of cur, with a
// message fit for the form.
func parseMoney(s, cur string) (int64, error) {
	c, err := money.Lookup(cur)
	if err != nil {
		return 0, formError(fmt.Sprintf("This account's currency %s is not known.", cur))
	}
	v, err := c.Parse(s)
	switch {
	case errors.Is(err, money.ErrPrecision) || errors.Is(err, money.ErrSyntax):
		return 0, formError(fmt.Sprintf("Enter an amount like %s (at most %d decimals for %s).", c.Format(1234*pow10(c.Digits)/100)+" "+c.Code, c.Digits, c.Code))
	case err != nil || v > 1_000_000_000_000_000:
		return 0, formError("That amount is too large.")
	case v <= 0:
		return 0, formError("The amount must be more than zero.")
	}
	return v, nil
}

func pow10(n int) int64 {
	v := int64(1)
	for range n {
		v *= 10
	}
	return v
}

// majorUnits is minor units of cur as a number of major units (for charts).
func majorUnits(minor int64, cur string) float64 {
	c, err := money.Lookup(cur)
	if err != nil {
		return float64(minor)
	}
	return float64(minor) / float64(pow10(c.Digits))
}
