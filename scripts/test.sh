#!/usr/bin/env bash
# One command: install system packages and test dependencies, lint, type-check, run the whole test suite.
#   bash scripts/test.sh          # everything (fast tests, then slow/scale tests)
#   bash scripts/test.sh --fast   # skip tests marked slow
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages. The local Hub used by the tests: nginx (range requests) in front of olah, git-lfs for LFS shards.
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v git-lfs >/dev/null 2>&1 || need+=(git-lfs)
# tests/test_jpegquality_magick.py: ImageMagick's identify (the peer for jpeg_quality) and cjpeg (other tables).
command -v identify >/dev/null 2>&1 || need+=(imagemagick)
command -v cjpeg >/dev/null 2>&1 || need+=(libjpeg-turbo-progs)
# tests/test_report.py: a real headless browser opens the `cfx report` page.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
  echo "Installing ${need[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

bash scripts/setup.sh --test
PY=.venv/bin/python

echo "== ruff" >&2
.venv/bin/ruff check cfx tests bench
.venv/bin/ruff format --check cfx tests bench
echo "== mypy" >&2
.venv/bin/mypy cfx

# Hub tests must run, not skip, when this script runs them.
export CFX_REQUIRE_HUB=1
# Likewise tests needing identify/cjpeg (installed above).
export CFX_REQUIRE_TOOLS=1
echo "== tests" >&2
if [ "${1:-}" = "--fast" ]; then
  exec $PY -m pytest -m "not slow" -q
fi
$PY -m pytest -m "not slow" -q
echo "== slow tests" >&2
rc=0
$PY -m pytest -m slow -q || rc=$?
# 5 = no test carried the mark: not a failure of the suite
[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || exit "$rc"
