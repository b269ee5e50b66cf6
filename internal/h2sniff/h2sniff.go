// Package h2sniff reads the start of an HTTP/2 connection (RFC 9113 §3.4)
// up to its first request's headers, so that a server can choose who
// serves the connection, then hands the connection on with the bytes read
// replayed.
//
// An HTTP/2 server must send its SETTINGS frame first, and some clients
// (gRPC-Go among them) send no request before they have it, so Sniff
// writes an empty SETTINGS frame (the protocol defaults, RFC 9113 §6.5.2)
// as soon as it has read the client preface. The client acknowledges it:
// a server that sends its own SETTINGS afterwards sees one ACK more than
// it asked for. gRPC-Go's server ignores SETTINGS ACKs; golang.org/x/net's
// treats an unexpected one as a connection error, so give it
// Sniffed.ReplayWithoutAck, which removes the client's first ACK.
//
//	sniffed, err := h2sniff.Sniff(shutdownCtx, tlsConn, h2sniff.Options{
//		PrefaceDeadline: time.Now().Add(10 * time.Second),
//		RequestDeadline: time.Now().Add(2 * time.Minute),
//	})
//	if err != nil {
//		tlsConn.Close()
//		return
//	}
//	if sniffed.ContentType == "application/grpc" {
//		serveGRPC(sniffed.Replay())
//		return
//	}
//	h2Server.ServeConn(sniffed.ReplayWithoutAck(), opts)
package h2sniff

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// DefaultMaxBytes is Options.MaxBytes when zero.
const DefaultMaxBytes = 64 << 10

// Frame layout (RFC 9113 §4.1, §6.5).
const (
	frameHeaderLen    = 9
	frameTypeSettings = 0x4
	flagAck           = 0x1
	// initialHeaderTableSize is SETTINGS_HEADER_TABLE_SIZE's initial
	// value, which the empty SETTINGS frame leaves in force (§6.5.2).
	initialHeaderTableSize = 4096
	// initialMaxFrameSize is SETTINGS_MAX_FRAME_SIZE's initial value.
	initialMaxFrameSize = 16384
)

// ErrTooLong is returned by Sniff when the client sent Options.MaxBytes
// without completing its first request's headers.
var ErrTooLong = errors.New("h2sniff: no request headers within the byte limit")

// ErrBadPreface is returned by Sniff when the connection does not start
// with the HTTP/2 client preface.
var ErrBadPreface = errors.New("h2sniff: the connection does not start with the HTTP/2 client preface")

// ErrStopped is returned by Sniff (wrapped) when its context is done
// before it has read the first request's headers.
var ErrStopped = errors.New("h2sniff: stopped")

// TLSConn is the connection Sniff reads: a *tls.Conn whose handshake is
// done.
type TLSConn interface {
	net.Conn
	ConnectionState() tls.ConnectionState
}

// Options bound Sniff. It clears the connection's deadlines before it
// returns.
type Options struct {
	// MaxBytes is the most Sniff reads (DefaultMaxBytes when zero).
	MaxBytes int
	// PrefaceDeadline, when not zero, is the deadline of the client
	// preface (RFC 9113 §3.4) and of the write of Sniff's SETTINGS.
	PrefaceDeadline time.Time
	// RequestDeadline, when not zero, is the deadline of the first
	// request's headers, after the preface: how long an HTTP/2
	// connection may stay without a stream, such as a client's that
	// connects ahead of its first call.
	RequestDeadline time.Time
}

// Sniffed is a connection whose start Sniff has read.
type Sniffed struct {
	// ContentType is the content-type of the first request, as sent;
	// empty when it has none.
	ContentType string
	// StreamError is true when the first request's headers are malformed
	// (an invalid field or pseudo-header, RFC 9113 §8.2, §8.3): a server
	// given the connection resets that stream.
	StreamError bool

	conn   TLSConn
	prefix []byte // every byte Sniff read
}

// Sniff reads conn's client preface, answers it with an empty SETTINGS
// frame, and reads frames up to the end of the first HEADERS frame and its
// CONTINUATION frames. It answers the PINGs before it, which the replay
// leaves out; the other frames before it (SETTINGS, WINDOW_UPDATE,
// PRIORITY, a PING or SETTINGS ACK) are kept for the replay, not
// answered. It fails on anything that is not HTTP/2, on a connection error
// (RFC 9113 §5.4.1), past opts.MaxBytes and at opts' deadlines; the caller
// then closes conn.
//
// When ctx is done first (a server that shuts down), Sniff returns at once
// with an error that wraps ErrStopped and context.Cause(ctx). Then, and at
// RequestDeadline, it has sent the client a GOAWAY (see GoAway), after its
// SETTINGS, so that the client knows no request was processed (RFC 9113
// §6.8) and may retry it on another connection.
func Sniff(ctx context.Context, conn TLSConn, opts Options) (*Sniffed, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	g := &guard{conn: conn}
	if ctx.Err() != nil {
		g.stopped = true
	} else {
		defer context.AfterFunc(ctx, g.stop)()
	}
	sniffed, settingsSent, err := sniff(g, conn, opts)
	stopped := g.finish(!opts.PrefaceDeadline.IsZero() || !opts.RequestDeadline.IsZero())
	switch {
	case stopped:
		if !settingsSent {
			_ = writeSettings(conn)
		}
		_ = GoAway(conn)
		return nil, fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx))
	case err != nil && settingsSent && errors.Is(err, os.ErrDeadlineExceeded):
		_ = GoAway(conn)
	}
	return sniffed, err
}

// sniff is Sniff's reading; settingsSent reports whether it has written
// its SETTINGS.
func sniff(g *guard, conn TLSConn, opts Options) (_ *Sniffed, settingsSent bool, _ error) {
	if err := g.setDeadline(opts.PrefaceDeadline); err != nil {
		return nil, false, fmt.Errorf("h2sniff: %w", err)
	}
	rec := &recorder{r: conn, max: opts.MaxBytes}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(rec, preface[:]); err != nil {
		return nil, false, fmt.Errorf("h2sniff: reading the client preface: %w", err)
	}
	if string(preface[:]) != http2.ClientPreface {
		return nil, false, ErrBadPreface
	}
	fr := http2.NewFramer(conn, rec)
	if err := fr.WriteSettings(); err != nil {
		return nil, false, fmt.Errorf("h2sniff: writing SETTINGS: %w", err)
	}
	if err := g.setDeadline(opts.RequestDeadline); err != nil {
		return nil, true, fmt.Errorf("h2sniff: %w", err)
	}
	fr.SetMaxReadFrameSize(initialMaxFrameSize)
	fr.ReadMetaHeaders = hpack.NewDecoder(initialHeaderTableSize, nil)
	fr.MaxHeaderListSize = uint32(opts.MaxBytes)
	for {
		f, err := fr.ReadFrame()
		var se http2.StreamError
		switch {
		case errors.As(err, &se):
			return &Sniffed{StreamError: true, conn: conn, prefix: rec.buf}, true, nil
		case errors.Is(err, errTooLong):
			return nil, true, ErrTooLong
		case err != nil:
			return nil, true, fmt.Errorf("h2sniff: reading frames: %w", err)
		}
		if ping, ok := f.(*http2.PingFrame); ok && !ping.IsAck() {
			// Answered here (RFC 9113 §6.7) and left out of the replay:
			// the server given the connection would answer it again, and
			// gRPC-Go's counts PINGs that come together against its
			// keepalive enforcement policy.
			if err := fr.WritePing(true, ping.Data); err != nil {
				return nil, true, fmt.Errorf("h2sniff: writing a PING ACK: %w", err)
			}
			rec.buf = rec.buf[:len(rec.buf)-frameHeaderLen-len(ping.Data)]
			continue
		}
		mh, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			continue
		}
		if mh.Truncated {
			return nil, true, ErrTooLong
		}
		return &Sniffed{ContentType: firstValue(mh, "content-type"), conn: conn, prefix: rec.buf}, true, nil
	}
}

// writeSettings writes Sniff's SETTINGS frame, with no parameter (the
// protocol defaults, RFC 9113 §6.5.2).
func writeSettings(conn TLSConn) error {
	_ = conn.SetWriteDeadline(time.Now().Add(goAwayTimeout))
	defer conn.SetWriteDeadline(time.Time{})
	return http2.NewFramer(conn, nil).WriteSettings()
}

// goAwayTimeout bounds GoAway's write, and its wait for the client to
// close the connection, as golang.org/x/net/http2's server bounds its
// own after a graceful GOAWAY.
const goAwayTimeout = time.Second

// GoAway sends a GOAWAY frame with last stream 0 and NO_ERROR on conn, an
// HTTP/2 connection whose server preface is sent: no stream was or will
// be processed, the client may retry them elsewhere (RFC 9113 §6.8).
// Then it reads and drops what the client sends until the client closes
// the connection, for a second at most, so that the caller's close does
// not reset a connection with unread data before the client has read
// the GOAWAY.
func GoAway(conn net.Conn) error {
	_ = conn.SetWriteDeadline(time.Now().Add(goAwayTimeout))
	err := http2.NewFramer(conn, nil).WriteGoAway(0, http2.ErrCodeNo, nil)
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(goAwayTimeout))
		_, _ = io.Copy(io.Discard, conn)
	}
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("h2sniff: writing GOAWAY: %w", err)
	}
	return nil
}

// guard sets the deadlines of Sniff's connection and lets stop, from
// another goroutine, end Sniff's reads at once, whatever Sniff sets after.
type guard struct {
	conn     TLSConn
	mu       sync.Mutex
	stopped  bool // stop came before finish
	finished bool
}

// errStopped is a guard's error once stopped.
var errStopped = errors.New("stopped")

func (g *guard) setDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return errStopped
	}
	return g.conn.SetDeadline(t)
}

func (g *guard) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.finished {
		g.stopped = true
		_ = g.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// finish ends the guard, clears the connection's deadlines when clear or
// stopped, and reports whether stop came first.
func (g *guard) finish(clear bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.finished = true
	if clear || g.stopped {
		_ = g.conn.SetDeadline(time.Time{})
	}
	return g.stopped
}

// firstValue is the first value of the (lower-case) field name in mh.
func firstValue(mh *http2.MetaHeadersFrame, name string) string {
	for _, f := range mh.RegularFields() {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// Replay returns the connection with the bytes Sniff read replayed
// unchanged, for a server that ignores SETTINGS ACKs (gRPC-Go's).
func (s *Sniffed) Replay() *Conn {
	return &Conn{TLSConn: s.conn, r: io.MultiReader(bytes.NewReader(s.prefix), s.conn)}
}

// ReplayWithoutAck returns the connection with the bytes Sniff read
// replayed, and without the client's first SETTINGS ACK, which
// acknowledges Sniff's SETTINGS, wherever it comes, for a server that
// refuses an ACK of settings it did not send (golang.org/x/net/http2's).
func (s *Sniffed) ReplayWithoutAck() *Conn {
	p := len(http2.ClientPreface)
	frames := &ackFilter{r: io.MultiReader(bytes.NewReader(s.prefix[p:]), s.conn)}
	return &Conn{TLSConn: s.conn, r: io.MultiReader(bytes.NewReader(s.prefix[:p]), frames)}
}

// Conn is a sniffed connection handed on: Read returns the replay, then
// what the client sends next; the rest, ConnectionState included, is the
// TLS connection's.
type Conn struct {
	TLSConn
	r io.Reader
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// errTooLong is the recorder's error; Sniff returns ErrTooLong.
var errTooLong = errors.New("h2sniff: byte limit reached")

// recorder reads at most max bytes from r and keeps them in buf, where
// Sniff removes the frames it answers. buf grows geometrically from
// 1 KiB, never past max.
type recorder struct {
	r    io.Reader
	buf  []byte
	read int // bytes read
	max  int
}

func (r *recorder) Read(p []byte) (int, error) {
	room := r.max - r.read
	if room <= 0 {
		return 0, errTooLong
	}
	if len(p) > room {
		p = p[:room]
	}
	n, err := r.r.Read(p)
	if len(r.buf)+n > cap(r.buf) {
		grown := make([]byte, len(r.buf), min(r.max, max(2*cap(r.buf), len(r.buf)+n, 1024)))
		copy(grown, r.buf)
		r.buf = grown
	}
	r.buf = append(r.buf, p[:n]...)
	r.read += n
	return n, err
}

// ackFilter passes r's frames (r starts at a frame boundary) and removes
// the first SETTINGS ACK (type SETTINGS, flag ACK, stream 0, no payload);
// from there it passes everything. Frame headers may come split across
// reads.
type ackFilter struct {
	r       io.Reader
	hdr     [frameHeaderLen]byte
	have    int    // bytes of hdr read
	out     []byte // bytes of hdr yet to be returned
	payload int    // payload bytes of the current frame yet to pass
	dropped bool   // the ACK is gone: pass everything
	err     error  // from r, returned once out is empty
}

func (f *ackFilter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		switch {
		case len(f.out) > 0:
			n := copy(p, f.out)
			f.out = f.out[n:]
			return n, nil
		case f.err != nil:
			err := f.err
			f.err = nil
			return 0, err
		case f.payload > 0:
			n, err := f.r.Read(p[:min(len(p), f.payload)])
			f.payload -= n
			return n, err
		case f.dropped:
			return f.r.Read(p)
		}
		n, err := f.r.Read(f.hdr[f.have:])
		f.have += n
		f.err = err
		if f.have < frameHeaderLen {
			continue
		}
		f.have = 0
		length := int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
		stream := uint32(f.hdr[5]&0x7f)<<24 | uint32(f.hdr[6])<<16 | uint32(f.hdr[7])<<8 | uint32(f.hdr[8])
		if f.hdr[3] == frameTypeSettings && f.hdr[4]&flagAck != 0 && length == 0 && stream == 0 {
			f.dropped = true
			continue
		}
		f.out, f.payload = f.hdr[:], length
	}
}
