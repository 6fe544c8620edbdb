#!/bin/sh
# Fetch the dashboard's JavaScript (htmx and its SSE extension) from the npm registry into a
# local directory, so the demo app and the browser tests run offline (`cjm-workers-demo --offline`).
# Usage: tests/fetch_js.sh [DIR]   (default: $CJM_WORKERS_JS_DIR or ~/.cache/cjm-fasthtml-workers/js)
# Needs node/npm. Nothing fetched here is committed: the directory lives outside the repository.
set -eu
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -c "import sys; from cjm_fasthtml_workers.web.dashboard import fetch_js; print(fetch_js(sys.argv[1] if len(sys.argv) > 1 else None))" "$@"
