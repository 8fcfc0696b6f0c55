#!/usr/bin/env bash
# test/readme-sections.sh — the documentation checks of test/all.sh (the
# Go tests of test/docs): README.md at most 10 KiB; README.zh-CN.md with the
# same section structure as README.md (number, levels and order of its
# headings), printed side by side when they differ; every relative link in
# README*.md, CONTRIBUTING.md, edge/README.md, controlplane/README.md,
# charts/README.md and docs/*.md pointing at a file that exists (and at a
# heading of it, for a #fragment). Needs only Go; runs from any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go test -count=1 ./test/docs/
