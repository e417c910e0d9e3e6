#!/bin/sh
# The test files run on every Node LTS line (.ci/run): all of proxy/test except
# those that check artefacts with other tools rather than the Node runtime
# (helm, promtool, Grafana JSON, README, the container image, which brings its
# own Node) and the tests in network namespaces, pulled cables and lossy links
# (kernel timing and random loss, the slowest part; Node 20 runs them in
# `npm test`). The lossy-link file alone is 2.4 minutes a run, and its 20 %
# loss scenario is a statistical one: three runs per CI tripled its chance of
# an unlucky draw without testing anything of the runtime that the others miss.
# Usage: scripts/lts-subset.sh   (prints the files, one a line)
set -eu
cd "$(dirname "$0")/.."
ls proxy/test/*.test.ts | grep -v -E '/(helm|helm-pod|helm-image|dashboard|dashboard-data|prometheus|rules|readme|image|netns|liveness-cable|lossy-link|translate)\.test\.ts$'
