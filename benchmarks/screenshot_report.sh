#!/usr/bin/env bash
# Screenshot a report's HTML in headless Chromium so a person can see that it renders.
#   bash benchmarks/screenshot_report.sh RESULTS/report/report.html OUT.png
# Needs Debian's chromium (apt-get install chromium).
set -euo pipefail
html=$(readlink -f "$1"); out=$(readlink -f "$2")
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1280,2400 --screenshot="$out" "file://$html" >/dev/null 2>&1
rm -rf "$profile"
test -s "$out" && echo "$out"
