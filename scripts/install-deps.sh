#!/usr/bin/env bash
# Installs what Parley needs on Debian 12 and is not there yet. Idempotent: a second run
# installs nothing. Usage: scripts/install-deps.sh [build|test]
#   build  the C libraries Parley links (OpenSSL, libsrtp2, libopus) and pkg-config
#   test   build, plus what the test suite runs against (usrsctp as an SCTP peer, python3)
set -euo pipefail
profile=${1:-build}

packages=(pkg-config libssl-dev libsrtp2-dev libopus-dev)
case $profile in
    build) ;;
    test) packages+=(libusrsctp-dev python3) ;;
    *) echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac

if ! command -v swift >/dev/null 2>&1; then
    echo "Swift 6.1 or newer is required (https://www.swift.org/install/linux/); 'swift' is not on PATH." >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing: ${missing[*]}"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
