package exchangeclient

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// watch notices X509-SVID rotations: on the source's Updated channel when
// it has one, and by polling, since such a channel may have other readers.
func (t *Tokens) watch() {
	defer t.wg.Done()
	var updated <-chan struct{}
	if u, ok := t.c.source.(interface{ Updated() <-chan struct{} }); ok {
		updated = u.Updated()
	}
	for {
		poll := t.c.clock.After(pollInterval)
		select {
		case <-t.life.Done():
			return
		case _, ok := <-updated:
			if !ok {
				updated = nil // a closed channel would wake us forever
			}
		case <-poll:
		}
		t.checkSource()
	}
}

// checkSource returns the entry of the source's X509-SVID, starting the
// rotation to it if it is new; nil when the source has no SVID.
func (t *Tokens) checkSource() *entry {
	svid, err := t.c.source.GetX509SVID()
	if err != nil || len(svid.Certificates) == 0 {
		return nil
	}
	t.mu.Lock()
	latest := t.latest
	t.mu.Unlock()
	if cur := t.current.Load(); latest == nil && cur != nil && bytes.Equal(cur.leaf.Raw, svid.Certificates[0].Raw) {
		return cur
	}
	if latest != nil && bytes.Equal(latest.leaf.Raw, svid.Certificates[0].Raw) {
		return latest
	}
	noticed := t.c.clock.Now()
	e, err := t.entryFor(svid)
	if err != nil {
		return nil
	}
	t.mu.Lock()
	if t.latest == e {
		t.mu.Unlock()
		return e
	}
	t.latest = e
	t.mu.Unlock()

	var from *heldToken
	if cur := t.current.Load(); cur != nil && cur != e {
		from = cur.tok.Load()
	}
	if h := e.tok.Load(); h != nil && noticed.Before(h.usableUntil) {
		// Back to a certificate that still has a token.
		t.promote(e)
		return e
	}
	t.acquire(e, from, noticed, false)
	return e
}

// promote makes e current if it is still the newest SVID noticed.
func (t *Tokens) promote(e *entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.latest == e {
		t.current.Store(e)
		t.latest = nil
	}
}

// handshakeEntry returns the entry whose SVID a new connection presents:
// the current one, or the source's if that has expired.
func (t *Tokens) handshakeEntry() (*entry, error) {
	if t.isClosed() {
		return nil, ErrTokensClosed
	}
	if e := t.current.Load(); e != nil && !e.dropped.Load() && t.c.clock.Now().Before(e.notAfter) {
		return e, nil
	}
	e := t.checkSource()
	if e == nil {
		return nil, errors.New("exchangeclient: the source has no X509-SVID")
	}
	if !t.c.clock.Now().Before(e.notAfter) {
		return nil, fmt.Errorf("%w: the source's X509-SVID x5t#S256 %s expired at %s", ErrCertificateExpired, e.thumb, e.notAfter.UTC().Format(time.RFC3339))
	}
	return e, nil
}
