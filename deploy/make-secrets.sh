#!/usr/bin/env bash
# Makes an overlay's key files (deploy/OVERLAY/secrets/): a routing key, a client-secret key and an
# API key, each from openssl's random bytes. Existing files are kept (rotate with docs/operations.md).
# Usage: deploy/make-secrets.sh overlays/single-cluster
set -euo pipefail
overlay=${1:?usage: deploy/make-secrets.sh OVERLAY}
cd "$(dirname "$0")/$overlay"
mkdir -p secrets
umask 077
[ -e secrets/routing-keys ] || echo "1 $(openssl rand -hex 32) current" > secrets/routing-keys
[ -e secrets/client-secret-keys ] || echo "1 $(openssl rand -hex 32) current" > secrets/client-secret-keys
[ -e secrets/api-keys ] || echo "sk_parley_$(openssl rand -hex 24)" > secrets/api-keys
echo "key files in $overlay/secrets (git ignores them)"
