#!/bin/sh
# curl-loop.sh calls an HTTPS resource server with curl, using only the
# files spiffe-sts-helper writes, until it has seen MIN_ROTATIONS rotations
# of the certificate or MAX_SECONDS have passed. It shares no code with
# spiffe-sts. It prints one line:
#
#   client=curl rotations=N calls=M failed=F
#
# Usage: curl-loop.sh OUTPUT_DIR TOKEN_FILE URL SERVER_NAME PORT MIN_ROTATIONS MAX_SECONDS
#
# Each call resolves OUTPUT_DIR/current once (readlink -f) and takes the
# certificate, key, bundle and token from that one version, so they always
# belong together. The server is verified with the SPIFFE bundle and by the
# DNS name in its X509-SVID: --resolve sends SERVER_NAME to 127.0.0.1
# without touching DNS, and curl checks the name against the certificate.
set -u
out=$1 token=$2 url=$3 name=$4 port=$5 want=$6 max=$7
calls=0 failed=0 rotations=0 last=""
end=$(( $(date +%s) + max ))
while [ "$rotations" -lt "$want" ] && [ "$(date +%s)" -lt "$end" ]; do
	d=$(readlink -f "$out/current")
	fp=$(sha256sum "$d/svid.pem" 2>/dev/null | cut -c1-16)
	if [ -n "$last" ] && [ -n "$fp" ] && [ "$fp" != "$last" ]; then
		rotations=$((rotations + 1))
	fi
	[ -n "$fp" ] && last=$fp
	calls=$((calls + 1))
	if ! curl -sS --fail -o /dev/null --max-time 5 \
		--cert "$d/svid.pem" --key "$d/svid_key.pem" --cacert "$d/svid_bundle.pem" \
		--resolve "$name:$port:127.0.0.1" \
		-H "Authorization: Bearer $(cat "$d/$token")" \
		"$url" 2>>"${CURL_ERRORS:-/dev/stderr}"; then
		failed=$((failed + 1))
	fi
	sleep 0.2
done
echo "client=curl rotations=$rotations calls=$calls failed=$failed"
