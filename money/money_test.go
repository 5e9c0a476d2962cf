package money

import (
	"bufio"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestTable checks ISO 4217 facts the rest of qshield depends on.
func TestTable(t *testing.T) {
	for _, tc := range []struct {
		code    string
		numeric uint16
		digits  int
	}{
		{"CNY", 156, 2}, {"JPY", 392, 0}, {"KRW", 410, 0}, {"KWD", 414, 3}, {"BHD", 48, 3},
		{"TND", 788, 3}, {"EUR", 978, 2}, {"USD", 840, 2}, {"GBP", 826, 2}, {"HKD", 344, 2},
		{"SGD", 702, 2}, {"CLF", 990, 4}, {"ISK", 352, 0}, {"AUD", 36, 2},
	} {
		c, err := Lookup(tc.code)
		if err != nil || c.Numeric != tc.numeric || c.Digits != tc.digits {
			t.Errorf("Lookup(%s) = %+v, %v; want numeric %d, %d digits", tc.code, c, err, tc.numeric, tc.digits)
		}
		n, err := Lookup(c.NumericCode())
		if err != nil || n != c {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", c.NumericCode(), n, err, c)
		}
		if b, err := ByNumeric(tc.numeric); err != nil || b != c {
			t.Errorf("ByNumeric(%d) = %+v, %v", tc.numeric, b, err)
		}
	}
	if c, err := Lookup("jpy"); err != nil || c.Code != "JPY" {
		t.Errorf("Lookup(jpy) = %+v, %v", c, err)
	}
	if got := (Currency{Code: "AUD", Numeric: 36}).NumericCode(); got != "036" {
		t.Errorf("NumericCode = %q, want 036", got)
	}
	for _, bad := range []string{"", "XXX", "ABCD", "999", "12", "0000", "¥"} {
		if _, err := Lookup(bad); !errors.Is(err, ErrUnknownCurrency) {
			t.Errorf("Lookup(%q) error = %v, want ErrUnknownCurrency", bad, err)
		}
	}
	seenCode, seenNum := map[string]bool{}, map[uint16]bool{}
	for i, c := range Currencies() {
		if seenCode[c.Code] || seenNum[c.Numeric] {
			t.Errorf("duplicate entry %+v", c)
		}
		seenCode[c.Code], seenNum[c.Numeric] = true, true
		if len(c.Code) != 3 || strings.ToUpper(c.Code) != c.Code || c.Numeric == 0 || c.Numeric > 999 || c.Digits < 0 || c.Digits > 4 {
			t.Errorf("bad entry %+v", c)
		}
		if i > 0 && table[i-1].Code >= c.Code {
			t.Errorf("table not sorted at %s", c.Code)
		}
	}
}

// TestParseVectors runs testdata/parse.txt: currency, text, and the minor
// units or the class of error expected.
func TestParseVectors(t *testing.T) {
	f, err := os.Open("testdata/parse.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	classes := map[string]error{"syntax": ErrSyntax, "precision": ErrPrecision, "range": ErrRange}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		// The text may hold spaces: it is everything between the first and
		// the last field.
		code, rest, _ := strings.Cut(line, " ")
		i := strings.LastIndexByte(rest, ' ')
		text, want := rest[:i], rest[i+1:]
		c, err := Lookup(code)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got, err := c.Parse(text)
		if class, ok := classes[want]; ok {
			if !errors.Is(err, class) {
				t.Errorf("%s Parse(%q) = %d, %v; want %s error", code, text, got, err, want)
			}
			continue
		}
		w, perr := strconv.ParseInt(want, 10, 64)
		if perr != nil {
			t.Fatalf("%q: bad expectation", line)
		}
		if err != nil || got != w {
			t.Errorf("%s Parse(%q) = %d, %v; want %d", code, text, got, err, w)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d vectors read", n)
	}
}

func TestFormat(t *testing.T) {
	jpy, _ := Lookup("JPY")
	cny, _ := Lookup("CNY")
	kwd, _ := Lookup("KWD")
	for _, tc := range []struct {
		c    Currency
		v    int64
		want string
	}{
		{jpy, 100, "100"}, {jpy, 0, "0"}, {jpy, -7, "-7"},
		{cny, 1234, "12.34"}, {cny, 5, "0.05"}, {cny, 0, "0.00"}, {cny, -5, "-0.05"}, {cny, 100, "1.00"},
		{kwd, 1250, "1.250"}, {kwd, 1, "0.001"},
		{cny, math.MinInt64, "-92233720368547758.08"}, {cny, math.MaxInt64, "92233720368547758.07"},
	} {
		if got := tc.c.Format(tc.v); got != tc.want {
			t.Errorf("%s Format(%d) = %q, want %q", tc.c.Code, tc.v, got, tc.want)
		}
	}
	if got := Format(10000, "JPY"); got != "10000 JPY" {
		t.Errorf("Format(10000, JPY) = %q", got)
	}
	if got := Format(12, "XXX"); !strings.HasPrefix(got, "12 ") {
		t.Errorf("Format with unknown currency = %q, want the bare minor units", got)
	}
}

// TestJPYIsNotCents is the regression test for the CLI charging ¥10,000
// when --amount 100 --currency JPY was typed (the old parser always
// multiplied by 100).
func TestJPYIsNotCents(t *testing.T) {
	a, err := ParsePositive("100", "JPY")
	if err != nil || a.Minor != 100 {
		t.Fatalf("ParsePositive(100, JPY) = %+v, %v; want 100 minor units", a, err)
	}
	if s := a.String(); s != "100 JPY" {
		t.Fatalf("String = %q", s)
	}
	k, err := ParsePositive("1.5", "KWD")
	if err != nil || k.Minor != 1500 {
		t.Fatalf("ParsePositive(1.5, KWD) = %+v, %v; want 1500 fils", k, err)
	}
	for _, bad := range []string{"0", "-1", "0.00"} {
		if _, err := ParsePositive(bad, "CNY"); !errors.Is(err, ErrRange) {
			t.Errorf("ParsePositive(%q) error = %v, want ErrRange", bad, err)
		}
	}
	if _, err := ParsePositive("1", "XYZ"); !errors.Is(err, ErrUnknownCurrency) {
		t.Errorf("unknown currency error = %v", err)
	}
}

// FuzzFormatParse checks, for every currency, that Parse inverts Format
// exactly.
func FuzzFormatParse(f *testing.F) {
	for _, v := range []int64{0, 1, -1, 99, 100, 1234, math.MaxInt64, math.MinInt64} {
		f.Add(v, uint8(0))
	}
	f.Fuzz(func(t *testing.T, v int64, i uint8) {
		c := table[int(i)%len(table)]
		s := c.Format(v)
		got, err := c.Parse(s)
		if err != nil || got != v {
			t.Fatalf("%s: Parse(Format(%d) = %q) = %d, %v", c.Code, v, s, got, err)
		}
	})
}

// FuzzParse checks that Parse never panics, and that whatever it accepts
// formats back to text denoting the same amount: Parse(Format(Parse(s))) ==
// Parse(s), and Format's text is canonical.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"12.34", "100", "-0.05", "1.250", "1,000", "1e3", "007.10", "92233720368547758.08", ""} {
		f.Add(s, uint8(29))
	}
	f.Fuzz(func(t *testing.T, s string, i uint8) {
		c := table[int(i)%len(table)]
		v, err := c.Parse(s)
		if err != nil {
			return
		}
		text := c.Format(v)
		again, err := c.Parse(text)
		if err != nil || again != v {
			t.Fatalf("%s: %q → %d → %q → %d, %v", c.Code, s, v, text, again, err)
		}
		if c.Format(again) != text {
			t.Fatalf("%s: Format not canonical for %d", c.Code, v)
		}
	})
}
