package exchangeclient

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

// entry is one certificate and the token bound to it.
type entry struct {
	owner    *Tokens
	svid     *x509svid.SVID
	leaf     *x509.Certificate
	thumb    string
	notAfter time.Time
	tlsCert  *tls.Certificate
	// sts sends token requests presenting exactly this SVID.
	sts *stsConn

	tok     atomic.Pointer[heldToken]
	used    atomic.Bool // Token returned the token since the last refresh
	dropped atomic.Bool
	wake    chan struct{} // makes maintain re-plan; buffered

	mu     sync.Mutex
	flight *flight // the request in progress, nil when none
}

// heldToken is an issued token and its schedule. It is never modified.
type heldToken struct {
	raw    string
	header string // "Bearer " + raw, so attaching it allocates nothing
	expiry time.Time
	// usableUntil is expiry less a skew allowance.
	usableUntil time.Time
	// refreshAt is when to replace the token; zero when it lasts as long
	// as its certificate and no replacement could last longer.
	refreshAt time.Time
}

// lookup returns the entry of leaf, by pointer or else by content; nil
// when there is none.
func (t *Tokens) lookup(leaf *x509.Certificate) *entry {
	m := *t.entries.Load()
	if e, ok := m[leaf]; ok {
		return e
	}
	for k, e := range m {
		if bytes.Equal(k.Raw, leaf.Raw) {
			return e
		}
	}
	return nil
}

// hold schedules tok, requested at sent.
func (e *entry) hold(tok *Token, sent time.Time) *heldToken {
	expiry := tok.Expiry
	// expires_in is rounded to whole seconds against an "iat" that was
	// truncated, so the "exp" claim can come up to a second earlier; it
	// is read here only to schedule, never trusted.
	if exp, ok := jwtExpiry(tok.AccessToken); ok && exp.Before(expiry) {
		expiry = exp
	}
	life := max(expiry.Sub(sent), 0)
	h := &heldToken{
		raw:         tok.AccessToken,
		header:      "Bearer " + tok.AccessToken,
		expiry:      expiry,
		usableUntil: expiry.Add(-min(maxSkew, life/10)),
	}
	// The STS caps exp at the certificate's NotAfter (RFC 8705 §3); a
	// token so capped cannot be replaced by a longer-lived one.
	if expiry.Before(e.notAfter.Add(-time.Second)) {
		h.refreshAt = sent.Add(life * 2 / 3)
	}
	return h
}

// jwtExpiry returns the "exp" claim of a JWT without verifying it.
func jwtExpiry(raw string) (time.Time, bool) {
	_, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return time.Time{}, false
	}
	payload, _, ok := strings.Cut(rest, ".")
	if !ok {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

// entryFor returns the entry of svid, creating it if needed.
func (t *Tokens) entryFor(svid *x509svid.SVID) (*entry, error) {
	if len(svid.Certificates) == 0 {
		return nil, errors.New("exchangeclient: the X509-SVID has no certificate")
	}
	leaf := svid.Certificates[0]
	if e := t.lookup(leaf); e != nil {
		return e, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrTokensClosed
	}
	if e := t.lookup(leaf); e != nil {
		return e, nil
	}
	e := &entry{
		owner:    t,
		svid:     svid,
		leaf:     leaf,
		thumb:    accesstoken.Thumbprint(leaf),
		notAfter: leaf.NotAfter,
		tlsCert:  &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: leaf},
		wake:     make(chan struct{}, 1),
	}
	for _, cert := range svid.Certificates {
		e.tlsCert.Certificate = append(e.tlsCert.Certificate, cert.Raw)
	}
	// A static source: every STS connection of this entry presents svid,
	// over HTTP or gRPC.
	sts, err := t.c.dialSTS(svid)
	if err != nil {
		return nil, err
	}
	e.sts = sts
	old := *t.entries.Load()
	m := make(map[*x509.Certificate]*entry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[leaf] = e
	t.entries.Store(&m)
	t.wg.Add(1)
	go t.maintain(e)
	return e, nil
}

// drop forgets e, whose certificate has expired.
func (t *Tokens) drop(e *entry) {
	t.mu.Lock()
	old := *t.entries.Load()
	m := make(map[*x509.Certificate]*entry, len(old))
	for k, v := range old {
		if v != e {
			m[k] = v
		}
	}
	t.entries.Store(&m)
	if t.latest == e {
		t.latest = nil
	}
	t.mu.Unlock()
	e.dropped.Store(true)
	e.tok.Store(nil)
	e.sts.close()
	if t.events != nil {
		t.events(Event{Kind: EventDropped, Thumbprint: e.thumb})
	}
}
