#!/usr/bin/env bash
# Renders every overlay of deploy/ with `kubectl kustomize` and checks what comes out: yamllint,
# and kubernetes-validate --strict (Kubernetes' own schemas, offline; unknown fields rejected).
# Each overlay gets fresh key files in a scratch copy (deploy/make-secrets.sh), never in the tree.
# docs/kubernetes.md. Usage: scripts/check-manifests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
validate=.venv/bin/kubernetes-validate
[ -x "$validate" ] || validate=kubernetes-validate
yamllint -c deploy/.yamllint deploy
cp -r deploy "$scratch/"
for overlay in deploy/overlays/*/; do
    name=$(basename "$overlay")
    rm -rf "$scratch/deploy/overlays/$name/secrets"
    "$scratch/deploy/make-secrets.sh" "overlays/$name" > /dev/null
    # kustomize's deprecation notes (bases, for kubectl 1.20's kustomize) are not failures.
    kubectl kustomize "$scratch/deploy/overlays/$name" > "$scratch/$name.yaml" 2> "$scratch/$name.err" \
        || { cat "$scratch/$name.err" >&2; exit 1; }
    grep -v "is deprecated" "$scratch/$name.err" >&2 || true
    yamllint -c deploy/.yamllint "$scratch/$name.yaml"
    "$validate" --strict --quiet "$scratch/$name.yaml"
    echo "deploy/overlays/$name: $(grep -c '^kind:' "$scratch/$name.yaml") resources rendered, linted and valid"
done
