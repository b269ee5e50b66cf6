package helper

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Paths of the local token endpoint.
const (
	// PathTokens serves every token of the current set.
	PathTokens = "/v1/tokens"
)

// TokensResponse is the answer of GET /v1/tokens.
type TokensResponse struct {
	// SPIFFEID is the SPIFFE ID of the set's X509-SVID.
	SPIFFEID string `json:"spiffe_id"`
	// X5TS256 is the thumbprint of the certificate every token is bound
	// to (RFC 8705 §3.1): a program compares it with the certificate it
	// loaded.
	X5TS256 string `json:"x5t#S256"`
	// NotAfter is when the certificate expires, RFC 3339.
	NotAfter string          `json:"not_after"`
	Tokens   []TokenResponse `json:"tokens"`
}

// TokenResponse is one token, the answer of GET /v1/tokens/NAME.
type TokenResponse struct {
	Name        string `json:"name"`
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	// ExpiresAt is RFC 3339; ExpiresIn is in whole seconds from now.
	ExpiresAt string `json:"expires_at"`
	ExpiresIn int64  `json:"expires_in"`
	Scope     string `json:"scope,omitempty"`
	// X5TS256 is the thumbprint of the certificate the token is bound to.
	X5TS256 string `json:"x5t#S256"`
}

// Handler serves the current set's tokens as JSON, for programs that ask
// rather than read files: GET /v1/tokens and GET /v1/tokens/NAME. Before
// the first set, and when the set has expired, it answers 503. Responses
// carry Cache-Control: no-store. Serve it only on a Unix socket or a
// loopback address: anyone who can connect reads the tokens (which are
// still useless without the key).
func (h *Helper) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathTokens, func(w http.ResponseWriter, r *http.Request) {
		s, ok := h.servable(w)
		if !ok {
			return
		}
		resp := TokensResponse{
			SPIFFEID: s.SVID.ID.String(),
			X5TS256:  s.Thumbprint,
			NotAfter: s.Leaf().NotAfter.UTC().Format(time.RFC3339),
			Tokens:   make([]TokenResponse, 0, len(s.Tokens)),
		}
		for _, t := range s.Tokens {
			resp.Tokens = append(resp.Tokens, h.tokenResponse(s, t))
		}
		writeJSON(w, http.StatusOK, resp)
	})
	mux.HandleFunc("GET "+PathTokens+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		s, ok := h.servable(w)
		if !ok {
			return
		}
		t, ok := s.Token(r.PathValue("name"))
		if !ok {
			writeJSON(w, http.StatusNotFound, errorBody{Error: "not_found", Description: "no token of that name is configured"})
			return
		}
		writeJSON(w, http.StatusOK, h.tokenResponse(s, t))
	})
	return mux
}

type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// servable returns the current set, or answers 503.
func (h *Helper) servable(w http.ResponseWriter) (*Set, bool) {
	s := h.current.Load()
	if s == nil || s.Valid(h.clock.Now()) != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "not_ready", Description: "no valid set of certificate and tokens"})
		return nil, false
	}
	return s, true
}

func (h *Helper) tokenResponse(s *Set, t Token) TokenResponse {
	return TokenResponse{
		Name:        t.Name,
		AccessToken: t.AccessToken,
		TokenType:   "Bearer",
		ExpiresAt:   t.Expiry.UTC().Format(time.RFC3339),
		ExpiresIn:   int64(t.Expiry.Sub(h.clock.Now()) / time.Second),
		Scope:       strings.Join(t.Scope, " "),
		X5TS256:     s.Thumbprint,
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
