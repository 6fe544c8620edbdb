#!/bin/sh
# Fetch the dashboard's JavaScript (htmx and its SSE extension) from the npm registry into a
# local directory, so that the demo app and the browser tests run offline (`--offline`).
# Usage: tests/fetch_js.sh [DIR]   (default: $CJM_WORKERS_JS_DIR or ~/.cache/cjm-fasthtml-workers/js)
# Nothing fetched here is committed: the directory lives outside the repository.
set -eu
exec "${PYTHON:-python3}" -m cjm_fasthtml_workers.web.assets "$@"
