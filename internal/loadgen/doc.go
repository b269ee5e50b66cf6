// Package loadgen is the engine of stsctl bench: it drives a spiffe-sts
// token endpoint over N keep-alive mTLS connections, in a closed loop (N
// workers, each sending its next request when the last one is answered) or
// an open loop at a fixed arrival rate, and measures the latency and the
// errors by OAuth error code (RFC 6749 §5.2).
//
// In the open loop, request i is scheduled at start + i/rate and its
// latency is measured from that scheduled time, not from when a connection
// was free to send it: a server that falls behind shows its queue in the
// percentiles instead of hiding it (coordinated omission).
//
//	grant := loadgen.Grant{GrantType: protocol.GrantTypeClientCredentials, Audience: []string{aud}}
//	target, _ := loadgen.ResolveTarget(ctx, stsURL, "", false) // loopback only
//	client := loadgen.NewHTTP(target, tlsConfig, 8, grant, false)
//	defer client.Close()
//	res, err := loadgen.Run(ctx, loadgen.Config{Connections: 8, Rate: 2000, Duration: 10 * time.Second}, client.Do)
//
// It also starts a server pinned to one core ([StartPinned]) and reads the
// server's CPU time and peak RSS from /proc ([ReadProcStats]).
package loadgen
