#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/k8s (what is checked: deploy/validate.py).
# Needs python3 with pip; on first use installs the pinned kubernetes-validate from PyPI into
# .local/pytools/kv (git-ignored), then reuses it. Uses kubectl too when it is on PATH.
#   deploy/validate.sh                                  # Kubernetes 1.30 and 1.37
#   LEDGERFLOW_KUBE_VERSIONS="1.31" deploy/validate.sh  # other versions (1.25..1.37)
#   LEDGERFLOW_VALIDATE_KUBECTL=0 deploy/validate.sh    # ignore kubectl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
KV_VERSION=1.37.0
TOOLS="$ROOT/.local/pytools/kv"
STAMP="$TOOLS/.kubernetes-validate-$KV_VERSION"

if [[ ! -f "$STAMP" ]]; then
  echo "deploy/validate.sh: installing kubernetes-validate==$KV_VERSION into ${TOOLS#"$ROOT"/}" >&2
  mkdir -p "$(dirname "$TOOLS")"
  # Install next to the final place and move it there, so an interrupted install is never used.
  tmp="$(mktemp -d "$TOOLS.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --target "$tmp" "kubernetes-validate==$KV_VERSION" >&2
  touch "$tmp/$(basename "$STAMP")"
  rm -rf "$TOOLS"
  mv "$tmp" "$TOOLS"
fi

PYTHONPATH="$TOOLS${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" "$ROOT/deploy/validate.py" "$@"
