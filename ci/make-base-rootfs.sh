#!/usr/bin/env bash
# Build (once) a Debian bookworm rootfs that stands in for the official python:3.11-slim image
# where Docker Hub is out of reach, and import it into podman.
#
#   ci/make-base-rootfs.sh CACHE_DIR IMAGE_NAME            build the tarball if absent, import it
#   ci/make-base-rootfs.sh --tarball-only CACHE_DIR        build the tarball only (no podman needed;
#                                                          .ci/run does this in the background)
#
# What the Dockerfile needs from python:3.11-slim, mirrored here: a `python` and `pip` first on
# PATH that may install into their environment (a venv at /opt/python, since Debian's own python3
# refuses `pip install`, PEP 668), CA certificates (the host's bundle is copied in, so that a
# TLS-intercepting egress proxy keeps working) and `useradd` (passwd is in minbase).
#
# mmdebstrap, not debootstrap: it fetches the packages with apt (pipelined, one connection) and
# unpacks them in one pass; debootstrap's one-by-one downloads took 4.5 to 28 min here depending
# on the mirror (issue 17). Documentation, man pages and locales are not installed (copyright
# files are). DEBIAN_MIRROR picks the mirror. The tarball is cached in CACHE_DIR: a second call
# only re-imports it, or does nothing if the image is present.
set -euo pipefail
TARBALL_ONLY=0
if [ "${1:-}" = --tarball-only ]; then TARBALL_ONLY=1; shift; fi
CACHE_DIR=$1
IMAGE=${2:-}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL=$CACHE_DIR/bookworm-python-base.tar
PACKAGES=python3,python3-venv,ca-certificates
LOG=$CACHE_DIR/mmdebstrap.log

if [ "$TARBALL_ONLY" = 0 ] && podman image exists "$IMAGE"; then
    echo "base image $IMAGE present"
    exit 0
fi
mkdir -p "$CACHE_DIR"
if [ ! -s "$TARBALL" ]; then
    if ! command -v mmdebstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends \
            mmdebstrap >/dev/null
    fi
    echo "mmdebstrap bookworm (minbase + $PACKAGES) -> $TARBALL"
    t=$SECONDS
    # the hooks run on the host with the rootfs as "$1" (in root mode, where chroot works)
    # the rootfs is assembled in memory (/dev/shm) and dpkg skips its fsyncs: on a busy disk
    # the unpacking, not the download, took most of the time
    [ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm
    nice -n 10 mmdebstrap --mode=root --format=tar --variant=minbase --include="$PACKAGES" \
        --dpkgopt=force-unsafe-io \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"' \
        --customize-hook='chroot "$1" python3 -m venv /opt/python' \
        --customize-hook='chroot "$1" /opt/python/bin/python -m pip --version' \
        --customize-hook='ln -sf /opt/python/bin/python "$1/usr/local/bin/python"' \
        bookworm "$TARBALL.tmp" "$MIRROR" > "$LOG" 2>&1 || { tail -30 "$LOG"; rm -f "$TARBALL.tmp"; exit 1; }
    mv "$TARBALL.tmp" "$TARBALL"
    echo "base rootfs built in $((SECONDS - t)) s ($(du -m "$TARBALL" | cut -f1) MB)"
fi
[ "$TARBALL_ONLY" = 1 ] && exit 0
podman import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$TARBALL" "$IMAGE" > /dev/null
echo "imported $TARBALL as $IMAGE"
