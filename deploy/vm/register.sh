#!/bin/sh
# Registers spiffe-sts on a VM with SPIRE: prints the `spire-server entry
# create` command, or runs it with RUN=1. Run it where spire-server can reach
# the server's admin socket (usually on the SPIRE server host).
#
#   PARENT_ID=spiffe://example.org/spire/agent/x509pop/<fingerprint> ./register.sh
#   RUN=1 PARENT_ID=... SELECTOR=path ./register.sh
#
# PARENT_ID is the SPIFFE ID of the SPIRE agent on the spiffe-sts host
# (`spire-server agent list`), or of a node alias grouping such agents.
#
# SELECTOR chooses how the agent's unix workload attestor recognises the
# process:
#   user (default)  unix:user:spiffe-sts, the User= of spiffe-sts.service
#   path            unix:user:spiffe-sts plus unix:path:/usr/local/bin/spiffe-sts;
#                   needs discover_workload_path = true in the agent's
#                   WorkloadAttestor "unix" plugin_data
set -eu

TRUST_DOMAIN=${TRUST_DOMAIN:-example.org}
SPIFFE_ID=${SPIFFE_ID:-spiffe://$TRUST_DOMAIN/spiffe-sts}
# The host name of issuer_url, as a DNS SAN of the X509-SVID.
DNS_NAME=${DNS_NAME:-sts.example.org}
STS_USER=${STS_USER:-spiffe-sts}
STS_BINARY=${STS_BINARY:-/usr/local/bin/spiffe-sts}
SELECTOR=${SELECTOR:-user}
SPIRE_SERVER=${SPIRE_SERVER:-spire-server}
# Admin socket of the SPIRE server; empty for spire-server's default.
SERVER_SOCKET=${SERVER_SOCKET:-}
RUN=${RUN:-0}

if [ -z "${PARENT_ID:-}" ]; then
	echo "register.sh: set PARENT_ID to the SPIFFE ID of the host's SPIRE agent (spire-server agent list)" >&2
	exit 2
fi

set -- "$SPIRE_SERVER" entry create \
	-parentID "$PARENT_ID" \
	-spiffeID "$SPIFFE_ID" \
	-dns "$DNS_NAME" \
	-selector "unix:user:$STS_USER"
case $SELECTOR in
user) ;;
path) set -- "$@" -selector "unix:path:$STS_BINARY" ;;
*)
	echo "register.sh: SELECTOR must be user or path, got \"$SELECTOR\"" >&2
	exit 2
	;;
esac
if [ -n "$SERVER_SOCKET" ]; then
	set -- "$@" -socketPath "$SERVER_SOCKET"
fi

if [ "$RUN" = 1 ]; then
	"$@"
else
	# Print the command, quoted so that it can be pasted into a shell.
	for arg in "$@"; do
		printf "'%s' " "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")"
	done
	printf '\n'
fi
