package forwarded

import (
	"errors"
	"fmt"
	"strings"
)

// XFCCPair is one key=value pair of an x-forwarded-client-cert element,
// with the value unquoted and unescaped. Keys are compared
// case-insensitively; values are case-sensitive.
type XFCCPair struct {
	Key, Value string
}

// XFCCElement is one element of an x-forwarded-client-cert header: the
// pairs that one proxy added, in the order it wrote them.
type XFCCElement []XFCCPair

// Values returns the values of key (case-insensitive) in e, in order.
func (e XFCCElement) Values(key string) []string {
	var vs []string
	for _, p := range e {
		if strings.EqualFold(p.Key, key) {
			vs = append(vs, p.Value)
		}
	}
	return vs
}

// String returns e in the syntax ParseXFCC reads: values that are empty of
// separators are written bare, others double-quoted with '"' and '\'
// escaped by a backslash.
func (e XFCCElement) String() string {
	var b strings.Builder
	for i, p := range e {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(p.Key)
		b.WriteByte('=')
		if !needsQuoting(p.Value) {
			b.WriteString(p.Value)
			continue
		}
		b.WriteByte('"')
		for j := 0; j < len(p.Value); j++ {
			if c := p.Value[j]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(p.Value[j])
		}
		b.WriteByte('"')
	}
	return b.String()
}

func needsQuoting(v string) bool {
	for i := 0; i < len(v); i++ {
		if !isBareValueChar(v[i]) {
			return true
		}
	}
	return false
}

// errXFCCSyntax is wrapped by every ParseXFCC error.
var errXFCCSyntax = errors.New("x-forwarded-client-cert syntax")

// ParseXFCC parses an x-forwarded-client-cert header value as Envoy
// documents it (configuration/http/http_conn_man/headers, "x-forwarded-
// client-cert"): elements separated by ',', one per proxy, each proxy
// appending its own at the end; within an element, key=value pairs
// separated by ';'. A value containing ',', ';', '=' or whitespace is
// double-quoted, and inside quotes '\"' stands for '"' and '\\' for '\'
// (a backslash before any other byte is kept as is, so Subject values
// with RFC 4514 escapes such as "CN=a\,b" survive).
//
// The grammar is strict, so that a client cannot make an element it wrote
// swallow the one a proxy appended after it: a quoted value must be
// followed by ';', ',' or the end; keys are RFC 9110 tokens; bare values
// hold no separator, quote, whitespace or control byte; no element is
// empty. Optional whitespace is allowed around elements and pairs (header
// lines joined with ", "). ParseXFCC does not bound the input: callers
// bound the header first.
func ParseXFCC(s string) ([]XFCCElement, error) {
	p := xfccParser{s: s}
	var elements []XFCCElement
	for {
		el, err := p.element()
		if err != nil {
			return nil, fmt.Errorf("%w: element %d: %w", errXFCCSyntax, len(elements)+1, err)
		}
		elements = append(elements, el)
		if p.eof() {
			return elements, nil
		}
		p.i++ // the ',' element() stopped at
	}
}

type xfccParser struct {
	s string
	i int
}

func (p *xfccParser) eof() bool { return p.i >= len(p.s) }

func (p *xfccParser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// element reads pairs up to a ',' (left unread) or the end.
func (p *xfccParser) element() (XFCCElement, error) {
	var el XFCCElement
	for {
		p.skipOWS()
		if p.eof() || p.s[p.i] == ',' {
			if el == nil {
				return nil, errors.New("empty element")
			}
			return nil, errors.New("empty pair")
		}
		pair, err := p.pair()
		if err != nil {
			return nil, fmt.Errorf("pair %d: %w", len(el)+1, err)
		}
		el = append(el, pair)
		p.skipOWS()
		switch {
		case p.eof() || p.s[p.i] == ',':
			return el, nil
		case p.s[p.i] == ';':
			p.i++
		default:
			return nil, fmt.Errorf("pair %d: unexpected %q after the value", len(el), p.s[p.i])
		}
	}
}

func (p *xfccParser) pair() (XFCCPair, error) {
	start := p.i
	for !p.eof() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	key := p.s[start:p.i]
	switch {
	case key == "":
		return XFCCPair{}, errors.New("missing key")
	case p.eof() || p.s[p.i] != '=':
		return XFCCPair{}, errors.New("missing '=' after the key")
	}
	p.i++ // '='
	if !p.eof() && p.s[p.i] == '"' {
		v, err := p.quoted()
		return XFCCPair{Key: key, Value: v}, err
	}
	start = p.i
	for !p.eof() && isBareValueChar(p.s[p.i]) {
		p.i++
	}
	if !p.eof() {
		switch c := p.s[p.i]; c {
		case ';', ',', ' ', '\t':
		default:
			return XFCCPair{}, fmt.Errorf("byte %q not allowed in an unquoted value", c)
		}
	}
	return XFCCPair{Key: key, Value: p.s[start:p.i]}, nil
}

// quoted reads a double-quoted value starting at the opening quote.
func (p *xfccParser) quoted() (string, error) {
	p.i++ // opening '"'
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\' && p.i+1 < len(p.s) && (p.s[p.i+1] == '"' || p.s[p.i+1] == '\\'):
			b.WriteByte(p.s[p.i+1])
			p.i += 2
			continue
		case c < 0x20 && c != '\t', c == 0x7f:
			return "", fmt.Errorf("control byte %#x in a quoted value", c)
		}
		b.WriteByte(c)
		p.i++
	}
	return "", errors.New("unterminated quoted value")
}

// isTokenChar reports whether c is a tchar (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isBareValueChar reports whether c may appear in an unquoted value:
// visible ASCII other than the separators and the quote.
func isBareValueChar(c byte) bool {
	return c > 0x20 && c < 0x7f && c != ',' && c != ';' && c != '=' && c != '"' && c != '\\'
}
