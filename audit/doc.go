// Package audit writes the audit trail of spiffe-sts: one JSON record per
// token decision, issued or refused, to its own sink, separate from the
// operational logs.
//
// A Record names who asked (the caller's SPIFFE ID, its certificate's
// x5t#S256 thumbprint, RFC 8705 §3.1, and remote address), what for (grant
// and token types, audience, scope), and what was decided (the issued
// token's jti, kid, subject, audience, scope and act chain, RFC 8693 §4.1,
// or the OAuth error code, RFC 6749 §5.2, and the reason). It never holds
// a raw token, key or signature.
//
// A Log writes records as JSON lines to a file that rotates by size,
// keeping MaxFiles older files (path.1 the newest), or to a writer such as
// stdout:
//
//	log, err := audit.Open(audit.Config{Path: "/var/log/spiffe-sts/audit.log", MaxSize: 100 << 20, MaxFiles: 5, Metrics: reg})
//	defer log.Close()
//	err = log.Write(&audit.Record{...})
//
// Records are encoded by Record.AppendJSON, which writes exactly what
// encoding/json writes (without HTML escaping) into the Log's reused
// buffer, so writing a record allocates nothing.
//
// A failed write is counted (spiffe_sts_audit_write_failures_total) and
// returned; the exchange server refuses the request instead of serving it
// unaudited when the operator requires the audit trail. Check reports
// whether the sink works, for readiness, and reopens a lost file.
package audit
