#!/usr/bin/env bash
# Generates the TLS material the mTLS tests need, with openssl only (no downloads):
#
#   ca.pem / ca.key                     test CA
#   other-ca.pem                        a second, unrelated CA
#   server.pem / server.key             worker server cert from the CA, SAN DNS:localhost, IP:127.0.0.1, IP:::1
#   client.pem / client.key             orchestrator client cert from the CA
#   other-client.pem / other-client.key client cert from the other CA (must be refused)
#   expired-client.pem / .key           client cert from the CA, valid 2020-01-01..2020-01-02 (must be refused)
#
# Usage: scripts/gen-certs.sh [outdir]   (default: test/certs/out/, git-ignored)
#
# Idempotent: when every file exists and the server cert is valid for another day it does
# nothing; otherwise it regenerates the whole set in a scratch dir and moves it in, so a
# reader never sees a half-written set. EC P-256 keys keep it well under a second.
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")/.." && pwd)/test/certs/out}"
files=(ca.pem ca.key other-ca.pem server.pem server.key client.pem client.key
  other-client.pem other-client.key expired-client.pem expired-client.key)

mkdir -p "$out"
complete=1
for f in "${files[@]}"; do [[ -s "$out/$f" ]] || complete=0; done
if ((complete)) && openssl x509 -in "$out/server.pem" -noout -checkend 86400 >/dev/null 2>&1; then
  exit 0
fi

work="$(mktemp -d "$out/.gen.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

# One self-contained config so the system openssl.cnf cannot add or clash with extensions.
cat >openssl.cnf <<'EOF'
[ req ]
distinguished_name = dn
prompt             = no
[ dn ]
CN = unused

[ v3_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer

[ client ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer

# `openssl ca` is only used for the expired cert: OpenSSL 3.0's `x509 -req` cannot set a
# start date in the past (-not_before arrived in 3.4), `ca -startdate/-enddate` can.
[ ca ]
default_ca = test_ca
[ test_ca ]
database        = index.txt
new_certs_dir   = .
serial          = serial
default_md      = sha256
policy          = policy_any
unique_subject  = no
email_in_dn     = no
copy_extensions = none
[ policy_any ]
commonName = supplied
EOF

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 8)"; }

# ca <name> <CN>
ca() {
  key "$1.key"
  openssl req -x509 -new -config openssl.cnf -key "$1.key" -subj "/CN=$2" -sha256 -days 3650 \
    -extensions v3_ca -set_serial "$(serial)" -out "$1.pem"
}

# leaf <name> <CN> <issuer> <extensions>
leaf() {
  key "$1.key"
  openssl req -new -config openssl.cnf -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -set_serial "$(serial)" -sha256 -days 825 \
    -extfile openssl.cnf -extensions "$4" -out "$1.pem" 2>/dev/null
}

ca ca "Blacktree Test CA"
ca other-ca "Unrelated Test CA"
leaf server localhost ca server
leaf client blacktree-orchestrator ca client
leaf other-client blacktree-orchestrator other-ca client

key expired-client.key
openssl req -new -config openssl.cnf -key expired-client.key -subj "/CN=blacktree-orchestrator-expired" \
  -out expired-client.csr
: >index.txt
openssl rand -hex 8 >serial
openssl ca -batch -notext -config openssl.cnf -name test_ca -cert ca.pem -keyfile ca.key \
  -in expired-client.csr -out expired-client.pem -extfile openssl.cnf -extensions client \
  -startdate 20200101000000Z -enddate 20200102000000Z 2>/dev/null

chmod 600 ./*.key
for f in "${files[@]}"; do mv -f "$f" "$out/$f"; done
