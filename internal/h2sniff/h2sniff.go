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
//	sniffed, err := h2sniff.Sniff(tlsConn, h2sniff.Options{
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
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
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
// answered.
// It fails on anything that is not HTTP/2, on a connection error (RFC 9113
// §5.4.1), past opts.MaxBytes and at opts' deadlines; the caller then
// closes conn.
func Sniff(conn TLSConn, opts Options) (*Sniffed, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if !opts.PrefaceDeadline.IsZero() || !opts.RequestDeadline.IsZero() {
		defer conn.SetDeadline(time.Time{})
	}
	if err := conn.SetDeadline(opts.PrefaceDeadline); err != nil {
		return nil, fmt.Errorf("h2sniff: %w", err)
	}
	rec := &recorder{r: conn, max: opts.MaxBytes}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(rec, preface[:]); err != nil {
		return nil, fmt.Errorf("h2sniff: reading the client preface: %w", err)
	}
	if string(preface[:]) != http2.ClientPreface {
		return nil, ErrBadPreface
	}
	fr := http2.NewFramer(conn, rec)
	if err := fr.WriteSettings(); err != nil {
		return nil, fmt.Errorf("h2sniff: writing SETTINGS: %w", err)
	}
	if err := conn.SetDeadline(opts.RequestDeadline); err != nil {
		return nil, fmt.Errorf("h2sniff: %w", err)
	}
	fr.SetMaxReadFrameSize(initialMaxFrameSize)
	fr.ReadMetaHeaders = hpack.NewDecoder(initialHeaderTableSize, nil)
	fr.MaxHeaderListSize = uint32(opts.MaxBytes)
	for {
		f, err := fr.ReadFrame()
		var se http2.StreamError
		switch {
		case errors.As(err, &se):
			return &Sniffed{StreamError: true, conn: conn, prefix: rec.buf}, nil
		case errors.Is(err, errTooLong):
			return nil, ErrTooLong
		case err != nil:
			return nil, fmt.Errorf("h2sniff: reading frames: %w", err)
		}
		if ping, ok := f.(*http2.PingFrame); ok && !ping.IsAck() {
			// Answered here (RFC 9113 §6.7) and left out of the replay:
			// the server given the connection would answer it again, and
			// gRPC-Go's counts PINGs that come together against its
			// keepalive enforcement policy.
			if err := fr.WritePing(true, ping.Data); err != nil {
				return nil, fmt.Errorf("h2sniff: writing a PING ACK: %w", err)
			}
			rec.buf = rec.buf[:len(rec.buf)-frameHeaderLen-len(ping.Data)]
			continue
		}
		mh, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			continue
		}
		if mh.Truncated {
			return nil, ErrTooLong
		}
		return &Sniffed{ContentType: firstValue(mh, "content-type"), conn: conn, prefix: rec.buf}, nil
	}
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
