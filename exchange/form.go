package exchange

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// tokenRequest is a token endpoint request, parsed once (RFC 6749 §3.2,
// RFC 8693 §2.1). Every parameter but audience and resource appears at most
// once; unknown parameters are ignored (RFC 6749 §3.2).
type tokenRequest struct {
	grantType          string
	clientID           string
	scope              string
	audience           []string
	resource           []string
	subjectToken       string
	subjectTokenType   string
	actorToken         string
	actorTokenType     string
	requestedTokenType string
	// otherClientAuth names a client authentication parameter other than
	// mTLS (client_secret, client_assertion), which is refused.
	otherClientAuth string
}

// Parameter names (RFC 6749 §4.4, RFC 8693 §2.1).
const (
	paramGrantType          = "grant_type"
	paramClientID           = "client_id"
	paramScope              = "scope"
	paramAudience           = "audience"
	paramResource           = "resource"
	paramSubjectToken       = "subject_token"
	paramSubjectTokenType   = "subject_token_type"
	paramActorToken         = "actor_token"
	paramActorTokenType     = "actor_token_type"
	paramRequestedTokenType = "requested_token_type"
)

// parseTokenRequest reads and parses the form body of r, which must be
// application/x-www-form-urlencoded and at most maxBytes long.
func parseTokenRequest(r *http.Request, maxBytes int64, buf *bytes.Buffer) (tokenRequest, error) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/x-www-form-urlencoded" {
		return tokenRequest{}, ErrInvalidRequest.WithDescription("content type must be application/x-www-form-urlencoded")
	}
	if r.ContentLength > maxBytes {
		return tokenRequest{}, ErrInvalidRequest.WithDescription("request body exceeds %d bytes", maxBytes)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		return tokenRequest{}, ErrInvalidRequest.WithDescription("reading the request body failed")
	}
	if n > maxBytes {
		return tokenRequest{}, ErrInvalidRequest.WithDescription("request body exceeds %d bytes", maxBytes)
	}
	return parseForm(buf.String())
}

// parseForm decodes an application/x-www-form-urlencoded body into a
// tokenRequest, refusing repeated single-valued parameters and empty values
// (RFC 6749 §3.2: parameters sent without a value are treated as omitted,
// which is ambiguous for a security decision, so they are refused).
func parseForm(body string) (tokenRequest, error) {
	var req tokenRequest
	for body != "" {
		var pair string
		pair, body, _ = strings.Cut(body, "&")
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return tokenRequest{}, ErrInvalidRequest.WithDescription("malformed form encoding")
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return tokenRequest{}, ErrInvalidRequest.WithDescription("malformed form encoding of %s", safeName(key))
		}
		var field *string
		switch key {
		case paramAudience:
			req.audience = append(req.audience, value)
			continue
		case paramResource:
			req.resource = append(req.resource, value)
			continue
		case paramGrantType:
			field = &req.grantType
		case paramClientID:
			field = &req.clientID
		case paramScope:
			field = &req.scope
		case paramSubjectToken:
			field = &req.subjectToken
		case paramSubjectTokenType:
			field = &req.subjectTokenType
		case paramActorToken:
			field = &req.actorToken
		case paramActorTokenType:
			field = &req.actorTokenType
		case paramRequestedTokenType:
			field = &req.requestedTokenType
		case "client_secret", "client_assertion", "client_assertion_type":
			req.otherClientAuth = key
			continue
		default:
			continue
		}
		if *field != "" {
			return tokenRequest{}, ErrInvalidRequest.WithDescription("parameter %s is repeated", key)
		}
		if value == "" {
			return tokenRequest{}, ErrInvalidRequest.WithDescription("parameter %s is empty", key)
		}
		*field = value
	}
	for _, list := range [][]string{req.audience, req.resource} {
		for _, v := range list {
			if v == "" {
				return tokenRequest{}, ErrInvalidRequest.WithDescription("audience and resource values must not be empty")
			}
		}
	}
	return req, nil
}

// safeName quotes a client-supplied parameter name for a description,
// truncated so that a description never echoes much of the request.
func safeName(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return fmt.Sprintf("%q", s)
}
