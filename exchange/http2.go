package exchange

//lint:file-ignore SA1019 net/http (Go 1.26) cannot serve HTTP/2 on a net.Conn that is not a *tls.Conn, as the sniffed connection is; x/net's server is the one net/http bundles.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/tap"

	"github.com/spiffe-sts/spiffe-sts/internal/h2sniff"
)

// maxConcurrentStreams caps the calls in progress on one gRPC connection,
// as golang.org/x/net/http2's default caps the requests of an HTTP/2 one.
const maxConcurrentStreams = 250

// sniffMaxBytes is the most serveHTTP2Conn reads of a connection before
// its first request's headers end: the largest header list the servers
// accept (maxHeaderListSize), and 4 KiB of the frames before it
// (SETTINGS, WINDOW_UPDATE, PING): what an unauthenticated connection
// may cost while it waits.
const sniffMaxBytes = maxHeaderListSize + 4<<10

// isGRPCContentType reports whether a request with this Content-Type is a
// gRPC call: application/grpc, or application/grpc+<codec> or
// application/grpc;<parameters> (gRPC over HTTP/2, "Requests").
func isGRPCContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// serveHTTP2Conn is HTTPServer's TLSNextProto handler for connections
// that negotiated h2 (ALPN): a connection whose first request is a gRPC
// call is served by the grpc.Server's own HTTP/2 transport, any other by
// the HTTP/2 server h2. ctx, net/http's connection context, carries the
// connection's ConnContext cache for both. It returns when the connection
// is done; net/http then closes it.
//
// stopped is done once hs shuts down. Until the connection is handed on,
// neither h2's graceful shutdown nor the grpc.Server's knows it, and
// net/http counts it active, so serveHTTP2Conn ends it itself: it stops
// the sniff at once and sends a GOAWAY that says no request was
// processed (RFC 9113 §6.8). A connection handed to h2 in the moment
// between the check of stopped and h2's registration of it, while h2's
// shutdown hook runs, misses h2's GOAWAY and ends at IdleTimeout.
func (s *Server) serveHTTP2Conn(stopped context.Context, hs *http.Server, h2 *http2.Server, conn *tls.Conn, h http.Handler) {
	ctx := context.Background()
	if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
		ctx = bc.BaseContext()
	}
	// As net/http does: the preface within ReadHeaderTimeout, and a
	// connection without requests kept for IdleTimeout, each ReadTimeout
	// when zero.
	now := time.Now()
	sniffed, err := h2sniff.Sniff(stopped, conn, h2sniff.Options{
		MaxBytes:        sniffMaxBytes,
		PrefaceDeadline: deadline(now, hs.ReadHeaderTimeout, hs.ReadTimeout),
		RequestDeadline: deadline(now, hs.IdleTimeout, hs.ReadTimeout),
	})
	if err != nil {
		s.log.Debug("HTTP/2 connection closed before its first request", logKeyRemote, conn.RemoteAddr().String(), logKeyReason, err.Error())
		return
	}
	if stopped.Err() != nil {
		_ = h2sniff.GoAway(conn)
		return
	}
	if !sniffed.StreamError && isGRPCContentType(sniffed.ContentType) {
		s.serveGRPCConn(connAuthFrom(ctx), sniffed.Replay())
		return
	}
	h2.ServeConn(sniffed.ReplayWithoutAck(), &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs})
}

// deadline is now plus the first of timeouts that is not zero; zero when
// all are.
func deadline(now time.Time, timeouts ...time.Duration) time.Time {
	for _, d := range timeouts {
		if d > 0 {
			return now.Add(d)
		}
	}
	return time.Time{}
}

// serveGRPCConn serves conn with the grpc.Server, until the grpc.Server
// closes it: the end of the connection, or the end of a graceful stop. A
// grpc.Server stopped before it takes conn leaves it to the caller, with
// a GOAWAY sent.
func (s *Server) serveGRPCConn(auth *connAuth, conn *h2sniff.Conn) {
	gc := &grpcConn{Conn: conn, closed: make(chan struct{})}
	gc.info = &grpcAuthInfo{
		TLSInfo: credentials.TLSInfo{
			State:          conn.ConnectionState(),
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		},
		auth: auth,
	}
	lis := &connListener{conn: gc, closed: make(chan struct{})}
	_ = s.grpc.Serve(lis) // returns when lis closes, or at once when stopped
	if lis.handedOff() {
		<-gc.closed
		return
	}
	// Stopped before it took the connection: its first call was not
	// processed.
	_ = h2sniff.GoAway(conn)
}

// grpcConn is a sniffed connection handed to the grpc.Server.
type grpcConn struct {
	*h2sniff.Conn
	info   *grpcAuthInfo
	once   sync.Once
	closed chan struct{} // closed by Close
}

// Close implements net.Conn.
func (c *grpcConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// grpcAuthInfo is the AuthInfo of the peer of a gRPC call
// (peer.FromContext): the connection's TLS state as credentials.NewTLS
// gives it, and its authentication cache.
type grpcAuthInfo struct {
	credentials.TLSInfo
	auth *connAuth
}

// connListener is the net.Listener of one connection, for
// grpc.Server.Serve: Accept returns the connection, then blocks until the
// connection or the listener closes.
type connListener struct {
	mu       sync.Mutex
	conn     *grpcConn
	accepted bool
	once     sync.Once
	closed   chan struct{}
}

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.accepted {
		// accepted only on the connection's return: closed first (a
		// GracefulStop before the first Accept), the connection stays
		// the caller's, which closes it.
		select {
		case <-l.closed:
			l.mu.Unlock()
			return nil, net.ErrClosed
		default:
			l.accepted = true
			l.mu.Unlock()
			return l.conn, nil
		}
	}
	l.mu.Unlock()
	select {
	case <-l.closed:
	case <-l.conn.closed:
	}
	return nil, net.ErrClosed
}

// handedOff reports whether Accept has returned the connection.
func (l *connListener) handedOff() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted
}

// Close implements net.Listener; it leaves the connection open.
func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr implements net.Listener.
func (l *connListener) Addr() net.Addr { return l.conn.LocalAddr() }

// handedOffCredentials are the grpc.Server's transport credentials: the
// TLS handshake is done when HTTPServer hands a connection on, so
// ServerHandshake returns it as it is, with its grpcAuthInfo.
type handedOffCredentials struct{}

var errNotHandedOff = errors.New("exchange: the gRPC API is served by HTTPServer's listener only")

func (handedOffCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	gc, ok := c.(*grpcConn)
	if !ok {
		return nil, nil, errNotHandedOff
	}
	return gc, gc.info, nil
}

func (handedOffCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errNotHandedOff
}

func (handedOffCredentials) Info() credentials.ProtocolInfo {
	// No SecurityVersion (deprecated, and a constant here): each
	// connection's version is in its TLSInfo.State.
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c handedOffCredentials) Clone() credentials.TransportCredentials { return c }

func (handedOffCredentials) OverrideServerName(string) error { return nil }

// callDeadline is the grpc.Server's tap: a call must end within
// Config.WriteTimeout of its headers, as an HTTP/2 request must (the
// stream is reset then), unless the client asked for less. The stream's
// context, ctx, is canceled when the call ends, which releases the timer.
func (s *Server) callDeadline(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if s.cfg.WriteTimeout <= 0 {
		return ctx, nil
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= s.cfg.WriteTimeout {
		return ctx, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	_ = cancel // see above: the parent's cancellation releases it
	return ctx, nil
}
