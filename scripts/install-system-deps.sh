#!/usr/bin/env bash
# Installs the Debian packages easel's tests and local runs use, only where they are missing:
# nats-server (transport), Ceph's RADOS Gateway (a real S3 server for tests), Prometheus + promtool.
set -euo pipefail
need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v radosgw >/dev/null || need+=(radosgw)
command -v ceph-mon >/dev/null || need+=(ceph-mon)
command -v ceph-osd >/dev/null || need+=(ceph-osd)
command -v ceph >/dev/null || need+=(ceph-common)
command -v promtool >/dev/null || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
