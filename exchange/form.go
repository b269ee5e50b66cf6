package exchange

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// Request is a token request (RFC 8693 §2.1, RFC 6749 §4.4.2) as the
// token endpoint parses it from a form or JSON body, or as the gRPC API
// receives it.
type Request struct {
	GrantType protocol.GrantType
	ClientID  string
	// Scope is the space-separated scope list (RFC 6749 §3.3).
	Scope              string
	Audience           []string
	Resource           []string
	SubjectToken       string
	SubjectTokenType   protocol.TokenType
	ActorToken         string
	ActorTokenType     protocol.TokenType
	RequestedTokenType protocol.TokenType
	// Impersonate asks for a token for the subject without an act claim
	// (the extension parameter "impersonate=true"); policy must allow it.
	Impersonate bool

	// otherClientAuth names a client authentication parameter other than
	// mTLS (client_secret, client_assertion), which is refused.
	otherClientAuth string
}

// parseTokenRequest reads and parses the body of r, read through body
// (r.Body limited to maxBytes+1 bytes): an
// application/x-www-form-urlencoded form (RFC 6749 §3.2) or, for clients
// such as gRPC-Go's credentials/sts, a JSON object with the same
// parameter names. The body is at most maxBytes long.
func parseTokenRequest(r *http.Request, body *io.LimitedReader, maxBytes int64, buf *bytes.Buffer) (Request, error) {
	mediaType, err := requestMediaType(r.Header.Get("Content-Type"))
	isJSON := err == nil && mediaType == "application/json"
	if !isJSON && (err != nil || mediaType != "application/x-www-form-urlencoded") {
		return Request{}, protocol.ErrInvalidRequest.WithDescription("content type must be application/x-www-form-urlencoded or application/json")
	}
	if r.ContentLength > maxBytes {
		return Request{}, protocol.ErrInvalidRequest.WithDescription("request body exceeds %d bytes", maxBytes)
	}
	n, err := buf.ReadFrom(body)
	if err != nil {
		return Request{}, protocol.ErrInvalidRequest.WithDescription("reading the request body failed")
	}
	if n > maxBytes {
		return Request{}, protocol.ErrInvalidRequest.WithDescription("request body exceeds %d bytes", maxBytes)
	}
	if isJSON {
		return parseJSON(buf.Bytes())
	}
	return parseForm(buf.String())
}

// requestMediaType returns the media type of a Content-Type value (RFC
// 9110 §8.3.1). The form type exactly as clients send it needs no parsing
// (mime.ParseMediaType would allocate its parameter map); anything else
// is parsed.
func requestMediaType(contentType string) (string, error) {
	const form = "application/x-www-form-urlencoded"
	if contentType == form {
		return form, nil
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	return mediaType, err
}

// requestBuilder collects parameters for every API: the form, the JSON
// body and the gRPC message. RFC 6749 §3.2: "Parameters sent without a
// value MUST be treated as if they were omitted from the request", so an
// empty value, of any parameter, is dropped; an empty audience or
// resource value is one audience or resource fewer. A single-valued
// parameter sent twice is refused, even when one copy is empty, since
// which copy counts would be ambiguous. Unknown parameters are ignored
// (RFC 6749 §3.2).
type requestBuilder struct {
	req Request
	// seen has a bit per single-valued parameter received, empty or not.
	seen uint16
}

func (b *requestBuilder) set(key, value string) error {
	req := &b.req
	var field *string
	var bit uint16
	switch key {
	case protocol.ParamAudience:
		if value != "" {
			req.Audience = append(req.Audience, value)
		}
		return nil
	case protocol.ParamResource:
		if value != "" {
			req.Resource = append(req.Resource, value)
		}
		return nil
	case protocol.ParamGrantType:
		field, bit = (*string)(&req.GrantType), 1<<0
	case protocol.ParamClientID:
		field, bit = &req.ClientID, 1<<1
	case protocol.ParamScope:
		field, bit = &req.Scope, 1<<2
	case protocol.ParamSubjectToken:
		field, bit = &req.SubjectToken, 1<<3
	case protocol.ParamSubjectTokenType:
		field, bit = (*string)(&req.SubjectTokenType), 1<<4
	case protocol.ParamActorToken:
		field, bit = &req.ActorToken, 1<<5
	case protocol.ParamActorTokenType:
		field, bit = (*string)(&req.ActorTokenType), 1<<6
	case protocol.ParamRequestedTokenType:
		field, bit = (*string)(&req.RequestedTokenType), 1<<7
	case protocol.ParamImpersonate:
		bit = 1 << 8
	case protocol.ParamClientSecret, protocol.ParamClientAssertion, protocol.ParamClientAssertionType:
		if value != "" {
			req.otherClientAuth = key
		}
		return nil
	default:
		return nil
	}
	if b.seen&bit != 0 {
		return protocol.ErrInvalidRequest.WithDescription("parameter %s is repeated", key)
	}
	b.seen |= bit
	switch {
	case value == "":
		return nil // as omitted
	case field != nil:
		*field = value
	case value != "true":
		return protocol.ErrInvalidRequest.WithDescription("parameter %s must be true when sent", key)
	default:
		req.Impersonate = true
	}
	return nil
}

// parseForm decodes an application/x-www-form-urlencoded body.
func parseForm(body string) (Request, error) {
	var b requestBuilder
	for body != "" {
		var pair string
		pair, body, _ = strings.Cut(body, "&")
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return Request{}, protocol.ErrInvalidRequest.WithDescription("malformed form encoding")
		}
		value, err := unescapeValue(rawValue)
		if err != nil {
			return Request{}, protocol.ErrInvalidRequest.WithDescription("malformed form encoding of %s", safeName(key))
		}
		if err := b.set(key, value); err != nil {
			return Request{}, err
		}
	}
	return b.req, nil
}

// escapedURNs are the protocol's URN values (grant_type and the token
// types) form-encoded as url.Values.Encode and most clients write them,
// colons escaped, with the values they decode to.
var escapedURNs = func() [][2]string {
	var list [][2]string
	for _, v := range []string{string(protocol.GrantTypeTokenExchange), string(protocol.TokenTypeAccessToken), string(protocol.TokenTypeJWT)} {
		list = append(list, [2]string{url.QueryEscape(v), v})
	}
	return list
}()

// unescapeValue is url.QueryUnescape, which allocates for any value it
// decodes, except that the protocol's URNs as clients encode them
// (escapedURNs) are the constants, for nothing.
func unescapeValue(raw string) (string, error) {
	if strings.HasPrefix(raw, "urn%3A") {
		for _, e := range escapedURNs {
			if raw == e[0] {
				return e[1], nil
			}
		}
	}
	return url.QueryUnescape(raw)
}

// parseJSON decodes a JSON object whose members are the form parameters:
// strings, or for audience and resource also arrays of strings. A member
// that appears twice is refused like a repeated form parameter.
func parseJSON(body []byte) (Request, error) {
	malformed := protocol.ErrInvalidRequest.WithDescription("the JSON body must be an object of string parameters")
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Request{}, malformed
	}
	var b requestBuilder
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return Request{}, malformed
		}
		if seen[key] && isKnownParam(key) {
			return Request{}, protocol.ErrInvalidRequest.WithDescription("parameter %s is repeated", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Request{}, malformed
		}
		var values []string
		var one string
		switch {
		case json.Unmarshal(raw, &one) == nil:
			values = []string{one}
		case (key == protocol.ParamAudience || key == protocol.ParamResource) && json.Unmarshal(raw, &values) == nil:
		case key == protocol.ParamImpersonate && string(raw) == "true":
			values = []string{"true"}
		default:
			if !isKnownParam(key) {
				continue // unknown members are ignored, whatever their type
			}
			return Request{}, protocol.ErrInvalidRequest.WithDescription("parameter %s must be a string", safeName(key))
		}
		for _, v := range values {
			if err := b.set(key, v); err != nil {
				return Request{}, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return Request{}, malformed
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Request{}, malformed
	}
	return b.req, nil
}

func isKnownParam(key string) bool {
	switch key {
	case protocol.ParamGrantType, protocol.ParamClientID, protocol.ParamScope, protocol.ParamAudience, protocol.ParamResource, protocol.ParamSubjectToken,
		protocol.ParamSubjectTokenType, protocol.ParamActorToken, protocol.ParamActorTokenType, protocol.ParamRequestedTokenType, protocol.ParamImpersonate:
		return true
	}
	return false
}

// safeName quotes a client-supplied parameter name for a description,
// truncated so that a description never echoes much of the request.
func safeName(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return fmt.Sprintf("%q", s)
}
