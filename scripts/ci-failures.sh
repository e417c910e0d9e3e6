#!/bin/sh
# Prints every failed assertion in the given TAP logs with its diagnostics
# (the YAML block under it, cut at 30 lines), so that the end of a CI log,
# which is what a reader of a long run sees first, names what failed.
# Usage: scripts/ci-failures.sh LOG... ; prints nothing when nothing failed.
for log in "$@"; do
  [ -f "$log" ] || continue
  grep -q 'not ok' "$log" || continue
  echo "== failures in $(basename "$log")"
  awk '
    /^[ ]*not ok / && !/# (TODO|SKIP)/ { show = 30; print; next }
    show > 0 { print; show--; if ($0 ~ /^[ ]*\.\.\.$/) show = 0 }
  ' "$log"
done
