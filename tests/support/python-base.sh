#!/usr/bin/env bash
# A stand-in for the official python:3.11-slim image, written as a root filesystem tarball, for
# building the Dockerfile on machines that reach no container registry. Debian bookworm's
# Python is 3.11; the rest makes it behave like the official image for a Dockerfile: `python`
# and `pip` on PATH in /usr/local/bin, no PEP 668 marker, and the host's extra CA certificates
# (an intercepting proxy's, under /usr/local/share/ca-certificates) trusted, so pip reaches PyPI
# where the host does. The test imports the tarball with `podman import` and caches it, keyed by
# this file's content: change this file and the next run builds it again.
#
#   tests/support/python-base.sh OUT.tar
set -euo pipefail

out=${1:?usage: python-base.sh OUT.tar}
suite=bookworm

# The host's Debian mirror (deb822 or one-line sources), else the public one.
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $3 == "'$suite'" {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/di-python-base.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT

echo "python-base: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >&2

mkdir -p "$rootfs/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends ca-certificates python3 python3-pip python3-venv >&2
chroot "$rootfs" update-ca-certificates >&2
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"

tar -C "$rootfs" --numeric-owner -cf "$out.partial" .
mv "$out.partial" "$out"
echo "python-base: wrote $out ($(du -h "$out" | cut -f1))" >&2
