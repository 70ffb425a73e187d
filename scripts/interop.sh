#!/usr/bin/env bash
# Runs the interop tests (Tests/Interop: headless Chromium, aiortc) against a built `parley`,
# inside a fresh network namespace that has only loopback, so no browser or client can reach out.
set -euo pipefail
cd "$(dirname "$0")/.."
namespace="parley-interop-$$"
ip netns add "$namespace"
trap 'ip netns delete "$namespace" 2>/dev/null || true' EXIT
ip netns exec "$namespace" ip link set lo up
python=.venv/bin/python
[ -x "$python" ] || python=python3  # scripts/install-deps.sh test creates .venv
# Arguments go to pytest; without a test path among them, the whole of Tests/Interop runs
# (scripts/interop.sh Tests/Interop/test_api.py -x runs one file).
paths=(Tests/Interop)
for argument in "$@"; do
    case "$argument" in Tests/*) paths=() ;; esac
done
ip netns exec "$namespace" env HOME="${HOME:-/root}" "$python" -m pytest -q -p no:cacheprovider \
    -W "ignore:distro.linux_distribution:DeprecationWarning" -W "ignore:'telnetlib' is deprecated:DeprecationWarning" \
    "${paths[@]}" "$@"
