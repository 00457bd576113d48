#!/usr/bin/env bash
# Set up everything on a fresh clone and run the main job: the article's crawl
# example, end to end, against a local server that the example starts itself.
#
#   bash scripts/demo.sh                      # 20,000 URLs, 100 workers
#   bash scripts/demo.sh --urls 2000 --workers 50
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_venv.sh
ensure_venv http
exec "$venv/bin/python" examples/crawl.py "$@"
