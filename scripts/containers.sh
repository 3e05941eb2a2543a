#!/usr/bin/env bash
# Container recipe for machines with podman and no image registry (CI, dev boxes): `make container-test`
# with CONTAINER_ENGINE=podman (the default where no Docker engine answers). The docker branch needs none of it.
#
#   scripts/containers.sh env              print `export CONTAINERS_CONF=...` (eval it)
#   scripts/containers.sh base             the Dockerfile's FROM image, from Debian (mmdebstrap), if missing
#   scripts/containers.sh standins         prom/prometheus, prom/node-exporter, prom/alertmanager, nginx, redis
#                                          from Debian, if missing
#   scripts/containers.sh serving TAG DIR  `make image` with podman from build context DIR (default .) as TAG
#   scripts/containers.sh images           base + stand-ins
#
# Every image is built once and kept (podman's store); remove one with `podman rmi` to rebuild it.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$PWD

export CONTAINERS_CONF=${CONTAINERS_CONF:-$PROJECT/deploy/podman/containers.conf}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CA_LABEL=product-classifier.ca-bundle
CACHE=${CONTAINERS_CACHE:-$PROJECT/.cache/containers}
# The FROM of Dockerfile.serve: Debian bookworm's python3 (3.11) stands in for the official python image.
BASE_IMAGE=docker.io/library/$(sed -n 's/^FROM \([^ ]*\) AS runtime$/\1/p' Dockerfile.serve)
# Stand-ins keep the tags the compose files pin, so the same files run with Docker and the real images.
PROMETHEUS_IMAGE=docker.io/prom/prometheus:v2.53.3
NODE_EXPORTER_IMAGE=docker.io/prom/node-exporter:v1.8.2
ALERTMANAGER_IMAGE=docker.io/prom/alertmanager:v0.27.0
NGINX_IMAGE=docker.io/library/nginx:1.22.1
REDIS_IMAGE=docker.io/library/redis:7.0.15
# Debian's docs, manuals and translations are not needed in any image.
SLIM=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*')

have() { podman image exists "$1"; }

rootfs() {  # rootfs NAME PACKAGES [HOOK...]: a Debian minbase tarball in the cache (made once)
    local tar=$CACHE/$1.tar packages=$2 hooks=()
    for hook in "${@:3}"; do hooks+=(--customize-hook="$hook"); done
    if [ ! -s "$tar" ]; then
        mkdir -p "$CACHE"
        echo "mmdebstrap $1: $packages" >&2
        mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" "${SLIM[@]}" "${hooks[@]}" \
            "$SUITE" "$tar.tmp" "$MIRROR"
        mv "$tar.tmp" "$tar"
    fi
    echo "$tar"
}

base() {
    # The host's CA bundle on top (a label names its hash), so that pip in a build trusts what the host trusts
    # (this machine reaches PyPI through a TLS-intercepting egress proxy) whichever CLI builds: `podman build`,
    # or the docker CLI through `podman system service`, which cannot mount it (`docker build` has no -v).
    local ca tar context
    ca=$(sha256sum "$CA_BUNDLE" | cut -c1-16)
    if have "$BASE_IMAGE" && [ "$(podman image inspect --format "{{index .Labels \"$CA_LABEL\"}}" "$BASE_IMAGE")" = "$ca" ]; then
        return 0
    fi
    if ! have "$BASE_IMAGE"; then
        tar=$(rootfs base python3,python3-venv,python3-pip,python-is-python3,ca-certificates)
        podman import --quiet --change 'CMD ["python3"]' "$tar" "$BASE_IMAGE" >/dev/null
    fi
    context=$(mktemp -d)
    cp "$CA_BUNDLE" "$context/ca-certificates.crt"
    printf 'FROM %s\nCOPY ca-certificates.crt %s\nLABEL %s=%s\n' "$BASE_IMAGE" "$CA_BUNDLE" "$CA_LABEL" "$ca" \
        >"$context/Containerfile"
    podman build --quiet --pull=never -t "$BASE_IMAGE" "$context" >/dev/null
    rm -rf "$context"
    echo "built $BASE_IMAGE (host CA bundle $ca)" >&2
}

standin() {  # standin IMAGE TAR CHANGE...
    local image=$1 tar=$2; shift 2
    have "$image" && return 0
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    podman import --quiet "${changes[@]}" "$tar" "$image" >/dev/null
    echo "built stand-in $image" >&2
}

standins() {
    if ! have "$ALERTMANAGER_IMAGE"; then
        # Its own rootfs (the shared one below is cached by name); /alertmanager for nobody, as in the real image.
        local am
        am=$(rootfs alertmanager prometheus-alertmanager,wget,ca-certificates \
            'mkdir -p "$1/alertmanager" && chown 65534:65534 "$1/alertmanager"')
        standin "$ALERTMANAGER_IMAGE" "$am" 'ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]' \
            'CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]' \
            'USER 65534' 'WORKDIR /alertmanager' 'EXPOSE 9093'
    fi
    if have "$PROMETHEUS_IMAGE" && have "$NODE_EXPORTER_IMAGE" && have "$NGINX_IMAGE" && have "$REDIS_IMAGE"; then
        return 0
    fi
    local tar
    # One Debian rootfs for the four stand-ins; each image gets the real image's entrypoint, user and ports.
    # Data directories as the real images have them: /prometheus for nobody, /data for redis.
    tar=$(rootfs standins prometheus,prometheus-node-exporter,nginx-light,redis-server,wget,ca-certificates \
        'mkdir -p "$1/prometheus" "$1/data" && chown 65534:65534 "$1/prometheus" && chroot "$1" chown redis:redis /data')
    standin "$PROMETHEUS_IMAGE" "$tar" 'ENTRYPOINT ["/usr/bin/prometheus"]' \
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
        'USER 65534' 'WORKDIR /prometheus' 'EXPOSE 9090'
    standin "$NODE_EXPORTER_IMAGE" "$tar" 'ENTRYPOINT ["/usr/bin/prometheus-node-exporter"]' 'USER 65534' 'EXPOSE 9100'
    standin "$NGINX_IMAGE" "$tar" 'CMD ["nginx", "-g", "daemon off;"]' 'EXPOSE 80' 'STOPSIGNAL SIGQUIT'
    standin "$REDIS_IMAGE" "$tar" 'CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]' \
        'USER redis' 'WORKDIR /data' 'EXPOSE 6379'
}

serving() {  # serving IMAGE:TAG [CONTEXT]: `make image` with podman (docker format) on the base above
    local tag=$1 context
    context=$(realpath "${2:-.}")
    base
    make --no-print-directory -C "$PROJECT" image DOCKER=podman IMAGE="${tag%:*}" TAG="${tag##*:}" \
        CONTEXT="$context" BUILD_FLAGS="--quiet --pull=never" >/dev/null
    echo "built $tag" >&2
}

case "${1:-}" in
    env) echo "export CONTAINERS_CONF=$CONTAINERS_CONF" ;;
    base) base ;;
    standins) standins ;;
    images) base; standins ;;
    serving) shift; serving "$@" ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
