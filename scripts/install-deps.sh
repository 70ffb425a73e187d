#!/usr/bin/env bash
# Installs what Parley needs on Debian 12 and is not there yet. Idempotent: a second run
# installs nothing. Usage: scripts/install-deps.sh [build|test]
#   build  the C libraries Parley links (OpenSSL, libsrtp2, libopus) and pkg-config
#   test   build, plus what the test suite runs against: usrsctp (an SCTP peer), Chromium and
#          chromedriver, Firefox ESR, Go and Debian's Pion v3 sources (the Pion client), iproute2
#          (network namespaces), Redis (with TLS: the route store tests), the openssl tool (test certificates:
#          a wss:// agent, a CA and rediss:// servers), and from PyPI
#          selenium, aiortc, pytest, marionette_driver (Firefox has no driver package in Debian) and
#          websockets (the example agent), into the repository's .venv
#   bench  build, plus the reference servers' toolchain (Go and Debian's Pion v3 sources), gcc for
#          the C forwarder, matplotlib for the plots in docs/, websockets for the example agents
set -euo pipefail
profile=${1:-build}

packages=(pkg-config libssl-dev libsrtp2-dev libopus-dev)
case $profile in
    build) ;;
    test) packages+=(python3-venv libusrsctp-dev chromium chromium-driver firefox-esr golang-go golang-github-pion-webrtc.v3-dev
                     iproute2 nftables fonts-dejavu-core redis-server openssl yamllint)
          # `kubectl kustomize` renders deploy/ (scripts/check-manifests.sh); any kubectl will do.
          command -v kubectl > /dev/null || packages+=(kubernetes-client) ;;
    bench) packages+=(python3-venv gcc golang-go golang-github-pion-webrtc.v3-dev util-linux) ;;
    *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

if ! command -v swift >/dev/null 2>&1; then
    echo "Swift 6.1 or newer is required (https://www.swift.org/install/linux/); 'swift' is not on PATH." >&2
    exit 1
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python packages go into a virtual environment of the repository's own (.venv), never into the
# system's Python: Debian 12 refuses that (PEP 668), and it is not ours to change. The tests, the
# benchmarks and the example agents run with .venv/bin/python.
python_packages=()
case $profile in
    test) python_packages=(selenium aiortc pytest marionette_driver websockets numpy kubernetes-validate pyyaml) ;;
    bench) python_packages=(matplotlib websockets aiortc numpy) ;;
esac
if [ ${#python_packages[@]} -gt 0 ]; then
    root=$(cd "$(dirname "$0")/.." && pwd)
    if [ ! -x "$root/.venv/bin/python" ]; then
        echo "Creating $root/.venv (Python packages for the tests, benchmarks and examples)"
        python3 -m venv "$root/.venv"
    fi
    modules=$(IFS=,; echo "${python_packages[*]//-/_}")  # kubernetes-validate is imported as kubernetes_validate
    modules=${modules//pyyaml/yaml}
    if ! "$root/.venv/bin/python" -c "import ${modules}" 2>/dev/null; then
        echo "Installing into .venv from PyPI: ${python_packages[*]}"
        "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check "${python_packages[@]}"
    fi
fi
