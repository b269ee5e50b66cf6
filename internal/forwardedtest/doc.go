// Package forwardedtest holds the trusted-proxy fixtures the forwarding
// tests share: the x-forwarded-client-cert element a proxy appends for a
// client certificate, and an XFCC policy trusting given proxies.
package forwardedtest
