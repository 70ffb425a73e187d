#!/usr/bin/env bash
# Makes an overlay's key files (deploy/OVERLAY/secrets/): a routing key, a client-secret key, an
# API key and Redis's password (with the URL the relays use), each from openssl's random bytes. Existing files are kept (rotate with docs/operations.md).
# Usage: deploy/make-secrets.sh overlays/single-cluster
set -euo pipefail
overlay=${1:?usage: deploy/make-secrets.sh OVERLAY}
cd "$(dirname "$0")/$overlay"
mkdir -p secrets
umask 077
[ -e secrets/routing-keys ] || echo "1 $(openssl rand -hex 32) current" > secrets/routing-keys
[ -e secrets/client-secret-keys ] || echo "1 $(openssl rand -hex 32) current" > secrets/client-secret-keys
[ -e secrets/api-keys ] || echo "sk_parley_$(openssl rand -hex 24)" > secrets/api-keys
# Redis's password (its requirepass) and the relays' URL with it (hex: nothing to percent-encode).
[ -e secrets/redis-password ] || openssl rand -hex 24 | tr -d '\n' > secrets/redis-password
[ -e secrets/redis-url ] || printf 'redis://:%s@parley-redis:6379/0' "$(cat secrets/redis-password)" > secrets/redis-url
echo "key files in $overlay/secrets (git ignores them)"
