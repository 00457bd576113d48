#!/usr/bin/env bash
# Set up everything on a fresh clone and run the main job: the command line,
# `parallelize fetch URLS -o OUT`, over a local server that this script starts itself
# (there is no internet here), with the live progress bar when stderr is a terminal.
#
#   bash scripts/demo.sh                            # 10,000 URLs, 100 workers
#   bash scripts/demo.sh --urls 2000 --workers 50
#   bash scripts/demo.sh --output out.jsonl --retries 2 --no-progress
#                                                   # other options go to parallelize fetch
#
# The article's crawl example (the library, no CLI) is still one command away:
#   .venv/bin/python examples/crawl.py --urls 20000 --workers 100
set -euo pipefail
cd "$(dirname "$0")/.."

urls=10000
workers=100
output=
passed=()
while [ $# -gt 0 ]; do
    case $1 in
        --urls) urls=${2:?--urls needs a number}; shift 2 ;;
        --workers) workers=${2:?--workers needs a number}; shift 2 ;;
        --output) output=${2:?--output needs a file}; shift 2 ;;
        -h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) passed+=("$1"); shift ;;
    esac
done
for value in "$urls" "$workers"; do
    case $value in
        '' | *[!0-9]* | 0) echo "demo.sh: --urls and --workers take a positive number, got '$value'" >&2; exit 2 ;;
    esac
done

. scripts/_venv.sh
ensure_venv "cli,fast"
py=$venv/bin/python

work=$(mktemp -d "${TMPDIR:-/tmp}/parallelize-demo.XXXXXX")
output=${output:-$work/results.jsonl}
server=
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -f "$work/urls.txt" "$work/server.url"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The local server prints its base URL (a free port on 127.0.0.1) on its first line.
"$py" -m parallelize.testing >"$work/server.url" &
server=$!
for _ in $(seq 100); do
    [ -s "$work/server.url" ] && break
    kill -0 "$server" 2>/dev/null || { echo "demo.sh: the local server did not start" >&2; exit 1; }
    sleep 0.1
done
read -r base <"$work/server.url" || { echo "demo.sh: no URL from the local server" >&2; exit 1; }

seq 0 $((urls - 1)) | awk -v base="$base" '{ print base "/page/" $0 }' >"$work/urls.txt"

echo "== parallelize fetch: $urls URLs of $base with $workers workers" >&2
status=0
"$venv/bin/parallelize" fetch "$work/urls.txt" -o "$output" -w "$workers" ${passed[@]+"${passed[@]}"} ||
    status=$?

[ -s "$output" ] || exit "$status"  # a usage error: nothing was run
echo
echo "== the JSON lines are in $output; the first two:"
head -n 2 "$output"
echo "== lines by status (error kind when nothing answered):"
"$py" - "$output" <<'EOF'
import collections
import json
import sys

counts = collections.Counter()
with open(sys.argv[1], encoding="utf-8") as lines:
    for line in lines:
        record = json.loads(line)
        counts[record["status"] or (record["error"] or {}).get("kind", "?")] += 1
for status, count in sorted(counts.items(), key=str):
    print(f"{count:>9,}  {status}")
print(f"{sum(counts.values()):>9,}  in all")
EOF
exit "$status"
