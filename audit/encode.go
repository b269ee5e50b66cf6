package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends r to dst as one JSON object, byte for byte what
// encoding/json's Encoder writes for r with SetEscapeHTML(false) (without
// its trailing newline), and returns the extended buffer. It allocates
// nothing beyond growing dst.
//
// r.Time must lie within years 0 to 9999, the range of RFC 3339 that
// encoding/json accepts; Log.Write refuses other records.
func (r *Record) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"time":"`...)
	dst = r.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","request_id":`...)
	dst = appendString(dst, r.RequestID)
	dst = append(dst, `,"transport":`...)
	dst = appendString(dst, r.Transport)
	dst = appendField(dst, `,"operation":`, r.Operation)
	dst = append(dst, `,"outcome":`...)
	dst = appendString(dst, r.Outcome)
	dst = appendField(dst, `,"error":`, r.Error)
	dst = appendField(dst, `,"reason":`, r.Reason)
	dst = appendField(dst, `,"detail":`, r.Detail)
	dst = appendField(dst, `,"caller":`, r.Caller)
	dst = appendField(dst, `,"x5t_s256":`, r.X5TS256)
	dst = appendField(dst, `,"remote_addr":`, r.RemoteAddr)
	dst = appendField(dst, `,"proxy_spiffe_id":`, r.ProxySPIFFEID)
	dst = appendField(dst, `,"grant_type":`, r.GrantType)
	dst = appendField(dst, `,"subject_token_type":`, r.SubjectTokenType)
	dst = appendField(dst, `,"actor_token_type":`, r.ActorTokenType)
	dst = appendField(dst, `,"requested_token_type":`, r.RequestedTokenType)
	dst = appendList(dst, `,"requested_audience":`, r.RequestedAudience)
	dst = appendField(dst, `,"requested_scope":`, r.RequestedScope)
	if r.Impersonate {
		dst = append(dst, `,"impersonate":true`...)
	}
	dst = appendField(dst, `,"subject":`, r.Subject)
	dst = appendField(dst, `,"rule":`, r.Rule)
	dst = appendField(dst, `,"issued_token_type":`, r.IssuedTokenType)
	dst = appendList(dst, `,"audience":`, r.Audience)
	dst = appendField(dst, `,"scope":`, r.Scope)
	dst = appendList(dst, `,"act":`, r.Act)
	dst = appendField(dst, `,"jti":`, r.JTI)
	dst = appendField(dst, `,"kid":`, r.KID)
	if r.ExpiresAt != 0 {
		dst = append(dst, `,"expires_at":`...)
		dst = strconv.AppendInt(dst, r.ExpiresAt, 10)
	}
	return append(dst, '}')
}

// timeEncodable reports whether t is within the years encoding/json (and
// so AppendJSON) can write as RFC 3339.
func timeEncodable(t time.Time) bool {
	y := t.Year()
	if y < 0 || y > 9999 {
		return false
	}
	// The offset's hours must fit two digits below 24, as
	// time.Time.MarshalJSON checks.
	_, offset := t.Zone()
	return offset > -24*3600 && offset < 24*3600
}

// appendField appends key and s, an omitempty string field, unless s is
// empty.
func appendField(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return appendString(append(dst, key...), s)
}

// appendList appends key and list, an omitempty []string field, unless
// list is empty.
func appendList(dst []byte, key string, list []string) []byte {
	if len(list) == 0 {
		return dst
	}
	dst = append(dst, key...)
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string (RFC 8259 §7) with the escapes
// encoding/json uses without HTML escaping: `"` and `\` escaped, \b \f \n
// \r \t by name, other bytes below 0x20 as \u00XX, U+2028 and U+2029 as
// \u2028 and \u2029, and each byte of invalid UTF-8 as \ufffd.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
