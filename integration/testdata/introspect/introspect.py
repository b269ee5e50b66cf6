#!/usr/bin/env python3
"""introspect.py asks spiffe-sts about a token, as a resource server
written in anything but Go would: RFC 7662 POST /introspect over mTLS with
its X509-SVID, using only the Python standard library (ssl, http.client).
It shares no code with spiffe-sts and prints the HTTP status on the first
line and the response body on the second.

Usage: introspect.py HOST_PORT STS_SPIFFE_ID BUNDLE CERT KEY TOKEN_FILE

CERT and KEY are the caller's X509-SVID and key in PEM ("-" for none: no
client certificate). The server is verified against the SPIFFE bundle and
by its SPIFFE ID, the URI SAN of its X509-SVID (which has no DNS name, so
the host name is not checked). The token is read from TOKEN_FILE, never
from the command line.
"""
import http.client
import ssl
import sys
import urllib.parse


def main():
    address, sts_id, bundle, cert, key, token_file = sys.argv[1:7]
    with open(token_file) as f:
        token = f.read().strip()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE: the identity is the URI SAN, checked below
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=bundle)
    if cert != "-":
        ctx.load_cert_chain(cert, key)
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    try:
        conn.connect()
        uris = [v for k, v in conn.sock.getpeercert().get("subjectAltName", ()) if k == "URI"]
        if uris != [sts_id]:
            raise ssl.SSLError("server SPIFFE ID %r, want %r" % (uris, sts_id))
        body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"})
        conn.request("POST", "/introspect", body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        print(resp.status)
        print(resp.read().decode())
    finally:
        conn.close()


if __name__ == "__main__":
    main()
