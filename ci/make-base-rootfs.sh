#!/usr/bin/env bash
# Build (once) a Debian bookworm minbase rootfs that stands in for the official
# python:3.11-slim image where Docker Hub is out of reach, and import it into podman.
#
#   ci/make-base-rootfs.sh CACHE_DIR IMAGE_NAME
#
# What the Dockerfile needs from python:3.11-slim, mirrored here: a `python` and `pip`
# first on PATH that may install into their environment (a venv at /opt/python, since
# Debian's own python3 refuses `pip install`, PEP 668), CA certificates (the host's
# bundle is copied in, so a TLS-intercepting egress proxy keeps working), `useradd`
# (passwd is in minbase) and apt-get. The tarball is cached in CACHE_DIR: a second call
# only re-imports it (or does nothing if the image is present).
set -euo pipefail
CACHE_DIR=$1
IMAGE=$2
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL=$CACHE_DIR/bookworm-python-base.tar
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

if podman image exists "$IMAGE"; then
    echo "base image $IMAGE present"
    exit 0
fi
if [ ! -s "$TARBALL" ]; then
    rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    # debootstrap mounts /proc (and /sys) inside the rootfs: unmount before removing anything
    trap 'for m in $(findmnt -rn -o TARGET | grep "^$rootfs/" | sort -r); do umount -l "$m"; done; rm -rf --one-file-system "$rootfs"' EXIT
    echo "debootstrap bookworm (minbase + $PACKAGES) -> $rootfs"
    nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" \
        > "$CACHE_DIR/debootstrap.log" 2>&1 || { tail -30 "$CACHE_DIR/debootstrap.log"; exit 1; }
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    chroot "$rootfs" python3 -m venv /opt/python
    chroot "$rootfs" /opt/python/bin/python -m pip --version
    ln -sf /opt/python/bin/python "$rootfs/usr/local/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi
podman import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$TARBALL" "$IMAGE" > /dev/null
echo "imported $TARBALL as $IMAGE"
