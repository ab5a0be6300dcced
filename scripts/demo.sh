#!/usr/bin/env bash
# One command: install cfx into .venv and run the offline demo (builds a small CF-shaped dataset and curates it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cfx demo "${1:-cfx-demo}" --overwrite
