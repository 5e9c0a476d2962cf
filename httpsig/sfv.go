package httpsig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file is the part of RFC 8941 (Structured Field Values) that
// Signature-Input, Signature and Content-Digest use: dictionaries whose
// members are inner lists of strings with parameters, or byte sequences.

// ErrSyntax is a header that is not a valid structured field of the
// expected shape.
var ErrSyntax = errors.New("httpsig: malformed structured field")

// maxField bounds a header this package parses.
const maxField = 8 << 10

// Param is one parameter (";name=value"); Value is an int64, a string
// (sf-string), a Token, or a bool.
type Param struct {
	Name  string
	Value any
}

// Token is an sf-token value (distinct from an sf-string).
type Token string

// Item is a string with parameters (a covered component identifier).
type Item struct {
	Value  string
	Params []Param
}

// InnerList is "(item item ...);params".
type InnerList struct {
	Items  []Item
	Params []Param
}

type parser struct {
	s   string
	pos int
}

func (p *parser) errf(format string, a ...any) error {
	return fmt.Errorf("%w: %s at offset %d", ErrSyntax, fmt.Sprintf(format, a...), p.pos)
}

func (p *parser) eof() bool { return p.pos >= len(p.s) }

func (p *parser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.pos]
}

func (p *parser) skipSP() {
	for !p.eof() && p.s[p.pos] == ' ' {
		p.pos++
	}
}

func (p *parser) skipOWS() {
	for !p.eof() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isALPHA(c byte) bool   { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// tchar of RFC 9110 plus ':' and '/' (sf-token).
func isTokenChar(c byte) bool {
	return isALPHA(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~:/", c) >= 0
}

func (p *parser) key() (string, error) {
	c := p.peek()
	if !isLCAlpha(c) && c != '*' {
		return "", p.errf("key must start with a lowercase letter or '*'")
	}
	start := p.pos
	for !p.eof() {
		c := p.s[p.pos]
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.pos++
	}
	return p.s[start:p.pos], nil
}

func (p *parser) bareItem() (any, error) {
	c := p.peek()
	switch {
	case c == '-' || isDigit(c):
		return p.integer()
	case c == '"':
		return p.str()
	case c == ':':
		return p.bytes()
	case c == '?':
		p.pos++
		switch p.peek() {
		case '1':
			p.pos++
			return true, nil
		case '0':
			p.pos++
			return false, nil
		}
		return nil, p.errf("boolean must be ?0 or ?1")
	case isALPHA(c) || c == '*':
		start := p.pos
		p.pos++
		for !p.eof() && isTokenChar(p.s[p.pos]) {
			p.pos++
		}
		return Token(p.s[start:p.pos]), nil
	}
	return nil, p.errf("unexpected character %q", c)
}

func (p *parser) integer() (int64, error) {
	start := p.pos
	if p.peek() == '-' {
		p.pos++
	}
	digits := p.pos
	for !p.eof() && isDigit(p.s[p.pos]) {
		p.pos++
	}
	if p.peek() == '.' {
		return 0, p.errf("decimals are not accepted here")
	}
	n := p.pos - digits
	if n == 0 || n > 15 {
		return 0, p.errf("integer of %d digits", n)
	}
	v, err := strconv.ParseInt(p.s[start:p.pos], 10, 64)
	if err != nil {
		return 0, p.errf("integer: %v", err)
	}
	return v, nil
}

func (p *parser) str() (string, error) {
	p.pos++ // opening quote
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == '\\':
			if p.eof() {
				return "", p.errf("string ends in a backslash")
			}
			n := p.s[p.pos]
			p.pos++
			if n != '"' && n != '\\' {
				return "", p.errf("bad escape \\%c", n)
			}
			b.WriteByte(n)
		case c == '"':
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", p.errf("string has a non-printable character")
		default:
			b.WriteByte(c)
		}
	}
	return "", p.errf("unterminated string")
}

func (p *parser) bytes() ([]byte, error) {
	p.pos++
	end := strings.IndexByte(p.s[p.pos:], ':')
	if end < 0 {
		return nil, p.errf("unterminated byte sequence")
	}
	enc := p.s[p.pos : p.pos+end]
	p.pos += end + 1
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if !isALPHA(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' {
			return nil, p.errf("byte sequence has %q", c)
		}
	}
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, p.errf("byte sequence: %v", err)
	}
	return b, nil
}

func (p *parser) params() ([]Param, error) {
	var out []Param
	for p.peek() == ';' {
		p.pos++
		p.skipSP()
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		var v any = true
		if p.peek() == '=' {
			p.pos++
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
			if _, ok := v.([]byte); ok {
				return nil, p.errf("byte sequence parameters are not accepted")
			}
		}
		// A repeated parameter overrides the earlier one (RFC 8941 §4.2.3.2).
		replaced := false
		for i := range out {
			if out[i].Name == k {
				out[i].Value, replaced = v, true
			}
		}
		if !replaced {
			out = append(out, Param{k, v})
		}
		if len(out) > 16 {
			return nil, p.errf("more than 16 parameters")
		}
	}
	return out, nil
}

func (p *parser) innerList() (InnerList, error) {
	var l InnerList
	if p.peek() != '(' {
		return l, p.errf("want an inner list")
	}
	p.pos++
	for {
		p.skipSP()
		if p.peek() == ')' {
			p.pos++
			var err error
			l.Params, err = p.params()
			return l, err
		}
		if p.peek() != '"' {
			return l, p.errf("inner list members must be strings")
		}
		s, err := p.str()
		if err != nil {
			return l, err
		}
		ps, err := p.params()
		if err != nil {
			return l, err
		}
		l.Items = append(l.Items, Item{Value: s, Params: ps})
		if len(l.Items) > 32 {
			return l, p.errf("more than 32 components")
		}
		if c := p.peek(); c != ' ' && c != ')' {
			return l, p.errf("inner list items must be separated by spaces")
		}
	}
}

// dictionary parses an sf-dictionary whose values are parsed by value.
func dictionary[T any](s string, value func(p *parser) (T, error)) ([]string, map[string]T, error) {
	if len(s) > maxField {
		return nil, nil, fmt.Errorf("%w: field of %d bytes", ErrSyntax, len(s))
	}
	p := &parser{s: s}
	p.skipSP()
	var keys []string
	m := map[string]T{}
	for !p.eof() {
		k, err := p.key()
		if err != nil {
			return nil, nil, err
		}
		if p.peek() != '=' {
			return nil, nil, p.errf("member %q has no value", k)
		}
		p.pos++
		v, err := value(p)
		if err != nil {
			return nil, nil, err
		}
		if _, dup := m[k]; !dup {
			keys = append(keys, k)
		}
		m[k] = v
		if len(keys) > 16 {
			return nil, nil, p.errf("more than 16 members")
		}
		p.skipOWS()
		if p.eof() {
			break
		}
		if p.peek() != ',' {
			return nil, nil, p.errf("want ',' between members")
		}
		p.pos++
		p.skipOWS()
		if p.eof() {
			return nil, nil, p.errf("trailing comma")
		}
	}
	return keys, m, nil
}

// bytesMember parses a byte sequence dictionary value (its parameters are
// read and ignored).
func bytesMember(p *parser) ([]byte, error) {
	if p.peek() != ':' {
		return nil, p.errf("want a byte sequence")
	}
	b, err := p.bytes()
	if err != nil {
		return nil, err
	}
	if _, err := p.params(); err != nil {
		return nil, err
	}
	return b, nil
}

func serializeString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

func serializeParams(b *strings.Builder, ps []Param) {
	for _, p := range ps {
		b.WriteByte(';')
		b.WriteString(p.Name)
		switch v := p.Value.(type) {
		case bool:
			if !v {
				b.WriteString("=?0")
			}
		case int64:
			b.WriteByte('=')
			b.WriteString(strconv.FormatInt(v, 10))
		case string:
			b.WriteByte('=')
			serializeString(b, v)
		case Token:
			b.WriteByte('=')
			b.WriteString(string(v))
		}
	}
}

// String serializes the inner list as RFC 8941 does (the form used in the
// signature base's "@signature-params" line).
func (l InnerList) String() string {
	var b strings.Builder
	b.WriteByte('(')
	for i, it := range l.Items {
		if i > 0 {
			b.WriteByte(' ')
		}
		serializeString(&b, it.Value)
		serializeParams(&b, it.Params)
	}
	b.WriteByte(')')
	serializeParams(&b, l.Params)
	return b.String()
}
