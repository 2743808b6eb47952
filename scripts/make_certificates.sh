#!/usr/bin/env bash
# Certificates and node keys for a consortium's Flower deployment (run once, at the coordinator).
#
#   scripts/make_certificates.sh OUT_DIR HOST SITE [SITE...]
#   scripts/make_certificates.sh outputs/certificates coordinator.example.org north south east
#
# Writes into OUT_DIR:
#   ca.crt, ca.key        the consortium's certificate authority (NIST P-384) (keep ca.key at the coordinator, offline if possible)
#   server.pem, server.key  the SuperLink's TLS certificate, signed by the CA, valid for HOST, 127.0.0.1 and localhost
#   sites/<SITE>, sites/<SITE>.pub  one SuperNode authentication key pair per site (NIST P-384, OpenSSH format)
# Give each site ca.crt and its own sites/<SITE> (private key); the coordinator registers every sites/*.pub.
# Existing files are kept (a new CA would invalidate every certificate already handed out): delete them to renew.
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 OUT_DIR HOST SITE [SITE...]   (HOST: the coordinator's DNS name or IP address as sites reach it)" >&2
  exit 2
fi
out=$1 host=$2
shift 2
days=${CERT_DAYS:-825}
mkdir -p "$out/sites"
umask 077

if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then host_entry="IP:$host"; else host_entry="DNS:$host"; fi
san="IP:127.0.0.1,DNS:localhost"
[ "$host_entry" != "IP:127.0.0.1" ] && [ "$host_entry" != "DNS:localhost" ] && san="$host_entry,$san"

if [ ! -f "$out/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -sha384 -days "$days" -nodes -subj "/O=rarefed consortium CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
  echo "created $out/ca.crt"
fi

if [ ! -f "$out/server.pem" ]; then
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes -subj "/O=rarefed coordinator/CN=$host" \
    -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
  openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -out "$out/server.pem" -days "$days" -sha384 \
    -extfile <(printf "subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" "$san") 2>/dev/null
  rm -f "$out/server.csr"
  echo "created $out/server.pem for $san"
fi

for site in "$@"; do
  if [ ! -f "$out/sites/$site" ]; then
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "rarefed site $site" -f "$out/sites/$site"
    echo "created $out/sites/$site (private, for site $site) and $out/sites/$site.pub"
  fi
done
chmod 644 "$out/ca.crt" "$out/server.pem" "$out"/sites/*.pub
