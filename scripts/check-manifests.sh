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
# The Grafana dashboard: JSON, and every metric it plots one Parley exports (docs/operations.md lists them).
python3 - <<'PY'
import json, re
dashboard = json.load(open("deploy/grafana/parley.json"))
documented = open("docs/operations.md").read() + open("docs/relay.md").read()
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        for name in re.findall(r"\b(parley_[a-z_]+?)(?:_bucket|_count|_sum)?\b", target["expr"]):
            assert f"`{name}" in documented, f"dashboard panel {panel['title']!r}: {name} is not a documented metric"
print(f"deploy/grafana/parley.json: {len(dashboard['panels'])} panels, every metric documented")
PY
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
