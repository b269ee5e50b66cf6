#!/usr/bin/env python3
"""call.py calls an HTTPS resource server using only the files
spiffe-sts-helper writes and the Python standard library (ssl, http.client),
until it has seen MIN_ROTATIONS rotations of the certificate or MAX_SECONDS
have passed. It shares no code with spiffe-sts and prints one line:

    client=python rotations=N calls=M failed=F

Usage: call.py OUTPUT_DIR TOKEN_FILE HOST_PORT SERVER_NAME SERVER_SPIFFE_ID MIN_ROTATIONS MAX_SECONDS

Each call resolves OUTPUT_DIR/current once (os.path.realpath) and reads the
certificate, key, bundle and token from that one version. The server is
verified against the SPIFFE bundle, by the DNS name in its X509-SVID, and
by its SPIFFE ID (the URI SAN).
"""
import hashlib
import http.client
import os
import socket
import ssl
import sys
import time


class Connection(http.client.HTTPSConnection):
    """An HTTPS connection to an address, verifying another server name."""

    def __init__(self, address, server_name, context):
        host, port = address.rsplit(":", 1)
        super().__init__(host, int(port), context=context, timeout=5)
        self.server_name = server_name

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)


def call(out, token_file, address, server_name, server_id):
    d = os.path.realpath(os.path.join(out, "current"))
    with open(os.path.join(d, token_file)) as f:
        token = f.read().strip()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.load_verify_locations(cafile=os.path.join(d, "svid_bundle.pem"))
    ctx.load_cert_chain(os.path.join(d, "svid.pem"), os.path.join(d, "svid_key.pem"))
    conn = Connection(address, server_name, ctx)
    try:
        conn.connect()
        uris = [v for k, v in conn.sock.getpeercert().get("subjectAltName", ()) if k == "URI"]
        if uris != [server_id]:
            raise ssl.SSLError("server SPIFFE ID %r, want %r" % (uris, server_id))
        conn.request("GET", "/orders", headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError("HTTP %d %s" % (resp.status, resp.getheader("WWW-Authenticate")))
    finally:
        conn.close()


def fingerprint(out):
    d = os.path.realpath(os.path.join(out, "current"))
    with open(os.path.join(d, "svid.pem"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def main():
    out, token_file, address, server_name, server_id = sys.argv[1:6]
    want, max_seconds = int(sys.argv[6]), float(sys.argv[7])
    calls = failed = rotations = 0
    last = None
    end = time.monotonic() + max_seconds
    while rotations < want and time.monotonic() < end:
        try:
            fp = fingerprint(out)
            if last is not None and fp != last:
                rotations += 1
            last = fp
        except OSError:
            pass  # the version went away between two swaps; the call below reads the new one
        calls += 1
        try:
            call(out, token_file, address, server_name, server_id)
        except Exception as e:  # every failure counts
            failed += 1
            print("call failed: %s" % e, file=sys.stderr)
        time.sleep(0.1)
    print("client=python rotations=%d calls=%d failed=%d" % (rotations, calls, failed))


if __name__ == "__main__":
    main()
