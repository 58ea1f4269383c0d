#!/usr/bin/env bash
# Runs schemathesis (pinned, installed from PyPI into .local/pytools/st on first use) against a
# running gateway's OpenAPI document: every operation is exercised with generated requests,
# and the run fails on any server error or any response that contradicts the document.
# Usage: scripts/schemathesis.sh BASE_URL BEARER_TOKEN [extra schemathesis args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="$ROOT/.local/pytools/st"
VERSION="4.32.5"
base="${1:?base URL}"
token="${2:?bearer token}"
shift 2
if [[ ! -f "$TARGET/.version-$VERSION" ]]; then
  rm -rf "$TARGET"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check --target "$TARGET" "schemathesis==$VERSION" >&2
  touch "$TARGET/.version-$VERSION"
fi
export PYTHONPATH="$TARGET"
exec python3 "$TARGET/bin/st" run "$base/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
  --max-examples "${LEDGERFLOW_SCHEMATHESIS_EXAMPLES:-25}" \
  --seed 1 \
  "$@"
