#!/usr/bin/env bash
# Renders an HTML report in headless Chromium and writes a full-page screenshot next to it.
#   scripts/screenshot-report.sh out/theory/report.html [out.png]
# Needs Debian's chromium (apt-get install chromium). The flags keep Chromium off the network: this
# machine has none, and the report is self-contained (figures inline), so nothing needs fetching.
set -euo pipefail
report=$(realpath "$1")
shot=${2:-${report%.html}.png}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium not found: apt-get install chromium" >&2
  exit 3
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1400,9000 \
  --screenshot="$shot" "file://$report" >/dev/null 2>&1
echo "$shot"
