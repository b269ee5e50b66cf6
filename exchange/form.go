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

// parseTokenRequest reads and parses the body of r: an
// application/x-www-form-urlencoded form (RFC 6749 §3.2) or, for clients
// such as gRPC-Go's credentials/sts, a JSON object with the same
// parameter names. The body is at most maxBytes long.
func parseTokenRequest(r *http.Request, maxBytes int64, buf *bytes.Buffer) (Request, error) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isJSON := err == nil && mediaType == "application/json"
	if !isJSON && (err != nil || mediaType != "application/x-www-form-urlencoded") {
		return Request{}, protocol.ErrInvalidRequest.WithDescription("content type must be application/x-www-form-urlencoded or application/json")
	}
	if r.ContentLength > maxBytes {
		return Request{}, protocol.ErrInvalidRequest.WithDescription("request body exceeds %d bytes", maxBytes)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, maxBytes+1))
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

// requestBuilder collects parameters, refusing repeated single-valued ones
// and empty values (RFC 6749 §3.2: parameters sent without a value are
// treated as omitted, which is ambiguous for a security decision, so they
// are refused). Unknown parameters are ignored (RFC 6749 §3.2).
type requestBuilder struct{ req Request }

func (b *requestBuilder) set(key, value string) error {
	req := &b.req
	var field *string
	switch key {
	case protocol.ParamAudience:
		req.Audience = append(req.Audience, value)
		return nil
	case protocol.ParamResource:
		req.Resource = append(req.Resource, value)
		return nil
	case protocol.ParamGrantType:
		field = (*string)(&req.GrantType)
	case protocol.ParamClientID:
		field = &req.ClientID
	case protocol.ParamScope:
		field = &req.Scope
	case protocol.ParamSubjectToken:
		field = &req.SubjectToken
	case protocol.ParamSubjectTokenType:
		field = (*string)(&req.SubjectTokenType)
	case protocol.ParamActorToken:
		field = &req.ActorToken
	case protocol.ParamActorTokenType:
		field = (*string)(&req.ActorTokenType)
	case protocol.ParamRequestedTokenType:
		field = (*string)(&req.RequestedTokenType)
	case protocol.ParamImpersonate:
		if req.Impersonate {
			return protocol.ErrInvalidRequest.WithDescription("parameter %s is repeated", key)
		}
		if value != "true" {
			return protocol.ErrInvalidRequest.WithDescription("parameter %s must be true when sent", key)
		}
		req.Impersonate = true
		return nil
	case "client_secret", "client_assertion", "client_assertion_type":
		req.otherClientAuth = key
		return nil
	default:
		return nil
	}
	if *field != "" {
		return protocol.ErrInvalidRequest.WithDescription("parameter %s is repeated", key)
	}
	if value == "" {
		return protocol.ErrInvalidRequest.WithDescription("parameter %s is empty", key)
	}
	*field = value
	return nil
}

func (b *requestBuilder) done() (Request, error) {
	for _, list := range [][]string{b.req.Audience, b.req.Resource} {
		for _, v := range list {
			if v == "" {
				return Request{}, protocol.ErrInvalidRequest.WithDescription("audience and resource values must not be empty")
			}
		}
	}
	return b.req, nil
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
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return Request{}, protocol.ErrInvalidRequest.WithDescription("malformed form encoding of %s", safeName(key))
		}
		if err := b.set(key, value); err != nil {
			return Request{}, err
		}
	}
	return b.done()
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
		if seen[key] {
			return Request{}, protocol.ErrInvalidRequest.WithDescription("parameter %s is repeated", safeName(key))
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
	return b.done()
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
