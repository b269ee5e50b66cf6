package accesstoken

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// Type is the JOSE "typ" header of access tokens (RFC 9068 §2.1).
const Type = "at+jwt"

// Claims is the payload of an access token (RFC 9068 §2.2).
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  Audience `json:"aud"`
	Expiry    int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	JWTID     string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	// Scope is the space-separated scope list (RFC 9068 §2.2.3).
	Scope string `json:"scope,omitempty"`
	// Confirmation binds the token to a certificate (RFC 8705 §3.1).
	Confirmation Confirmation `json:"cnf"`
	// Actor is the delegation chain (RFC 8693 §4.1), nil when the subject
	// acts for itself.
	Actor *Actor `json:"act,omitempty"`
	// MayAct names who may act for the subject (RFC 8693 §4.4); nil when
	// unrestricted.
	MayAct *Actor `json:"may_act,omitempty"`
	// SubjectID qualifies a subject that is not a SPIFFE ID, such as an end
	// user of an external issuer, with that issuer (RFC 9493 "iss_sub"
	// format); nil for SPIFFE ID subjects.
	SubjectID *SubjectID `json:"sub_id,omitempty"`
}

// SubjectID is an RFC 9493 §3.2.4 "iss_sub" subject identifier.
type SubjectID struct {
	Format  string `json:"format"`
	Issuer  string `json:"iss"`
	Subject string `json:"sub"`
}

// SubjectIDFormatIssSub is the RFC 9493 format of SubjectID.
const SubjectIDFormatIssSub = "iss_sub"

// Depth returns the number of actors in the act chain.
func (c *Claims) Depth() int {
	n := 0
	for a := c.Actor; a != nil; a = a.Actor {
		n++
	}
	return n
}

// Scopes returns the granted scopes.
func (c *Claims) Scopes() []string { return strings.Fields(c.Scope) }

// HasScope reports whether scope was granted.
func (c *Claims) HasScope(scope string) bool {
	for s := range strings.FieldsSeq(c.Scope) {
		if s == scope {
			return true
		}
	}
	return false
}

// ActorChain returns the subjects of the RFC 8693 §4.1 "act" chain,
// outermost first: the current actor, then the party it acted for, and so
// on. The subject itself is not included; the chain is empty when the
// subject acts for itself.
func (c *Claims) ActorChain() []string {
	var chain []string
	for a := c.Actor; a != nil; a = a.Actor {
		chain = append(chain, a.Subject)
	}
	return chain
}

// Confirmation is the RFC 7800 "cnf" claim carrying the RFC 8705 §3.1
// certificate thumbprint.
type Confirmation struct {
	X5TS256 string `json:"x5t#S256"`
}

// Actor is one hop of an RFC 8693 §4.1 "act" chain: the party acting, and
// nested inside it whoever that party acted for.
type Actor struct {
	Subject string `json:"sub"`
	Actor   *Actor `json:"act,omitempty"`
}

// Audience is the "aud" claim: one or more recipients. It is encoded as a
// string when there is one value and as an array otherwise (RFC 7519 §4.1.3).
type Audience []string

// Contains reports whether aud is one of the audience values.
func (a Audience) Contains(aud string) bool {
	for _, v := range a {
		if v == aud {
			return true
		}
	}
	return false
}

// MarshalJSON implements json.Marshaler.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		// A pointer fits an interface as it is; the string would be
		// copied to the heap.
		return json.Marshal(&a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON implements json.Unmarshaler.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("accesstoken: aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// Thumbprint returns the RFC 8705 §3.1 "x5t#S256" value of cert: the
// unpadded base64url encoding of the SHA-256 digest of its DER encoding.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var text [43]byte // base64.RawURLEncoding.EncodedLen(sha256.Size), on the stack
	base64.RawURLEncoding.Encode(text[:], sum[:])
	return string(text[:])
}
