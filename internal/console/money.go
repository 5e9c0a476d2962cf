package console

import (
	"fmt"
	"strings"
)

// minorUnits is the number of decimals of a currency for display.
// TODO(merge): use the money package.
func minorUnits(cur string) int {
	switch cur {
	case "JPY", "KRW", "VND", "CLP", "ISK":
		return 0
	case "KWD", "BHD", "OMR", "JOD", "TND", "IQD", "LYD":
		return 3
	}
	return 2
}

func formatMoney(minor int64, cur string) string {
	d := minorUnits(cur)
	neg := minor < 0
	u := uint64(minor)
	if neg {
		u = uint64(-minor)
	}
	s := fmt.Sprint(u)
	if d > 0 {
		for len(s) <= d {
			s = "0" + s
		}
		s = s[:len(s)-d] + "." + s[len(s)-d:]
	}
	if neg {
		s = "-" + s
	}
	return s + " " + cur
}

func signedMoney(minor int64, cur string) string { return formatMoney(minor, cur) }

func parseMoney(s, cur string) (int64, error) {
	s = strings.TrimSpace(s)
	d := minorUnits(cur)
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || len(frac) > d || strings.Trim(whole+frac, "0123456789") != "" || len(whole) > 15 {
		return 0, fmt.Errorf("Enter an amount like %s (at most %d decimals for %s).", formatMoney(1234*pow10(d)/100, cur), d, cur)
	}
	for len(frac) < d {
		frac += "0"
	}
	var v int64
	for _, ch := range whole + frac {
		v = v*10 + int64(ch-'0')
	}
	if v <= 0 {
		return 0, fmt.Errorf("The amount must be more than zero.")
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
