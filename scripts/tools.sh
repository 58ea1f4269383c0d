#!/usr/bin/env bash
# Installs on first use the tools LedgerFlow's tests run beside cargo, and prints where one is:
#   scripts/tools.sh promtool    prints the path of promtool (installing it first if needed)
#
# promtool is the one from Debian's `prometheus` package: `apt-get download` fetches the
# package and only its `usr/bin/promtool` is unpacked, into .local/tools/prometheus
# (git-ignored). Nothing is installed system-wide, so no Prometheus server is set up to start
# (a full `apt-get install prometheus` would enable one, listening on :9090). The package's
# version is recorded in .local/tools/prometheus/.installed; a run reuses what is there.
# `LEDGERFLOW_PROMTOOL=/path/to/promtool` uses another promtool instead, installing nothing.
#
# Idempotent and non-interactive. Needs apt-get, and root (or sudo) only when the package
# lists must be updated first (a fresh machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.local/tools"

die() { printf 'tools.sh: error: %s\n' "$*" >&2; exit 1; }

# apt_download PACKAGE DIR: fetches PACKAGE's .deb into DIR, updating the package lists once if
# apt knows no candidate for it yet.
apt_download() {
  local package="$1" dir="$2" sudo=""
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $package by hand"
  # Read whole first: `grep -q` stopping early would fail the pipeline (pipefail).
  local policy
  policy="$(apt-cache policy "$package" 2>/dev/null || true)"
  if [[ "$policy" != *"Candidate: "[0-9]* ]]; then
    if [[ $(id -u) -ne 0 ]]; then
      command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get update"
      sudo="sudo"
    fi
    echo "tools.sh: updating package lists" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
  fi
  # As a user apt's sandbox can write to: apt warns (and may fail) when it cannot.
  (cd "$dir" && chmod 0777 . && apt-get download -q "$package" >&2) || die "apt-get download $package failed"
}

promtool() {
  if [[ -n "${LEDGERFLOW_PROMTOOL:-}" ]]; then
    command -v "$LEDGERFLOW_PROMTOOL" || die "no promtool at $LEDGERFLOW_PROMTOOL"
    return 0
  fi
  local dir="$TOOLS/prometheus"
  if [[ -f "$dir/.installed" && -x "$dir/bin/promtool" ]]; then
    echo "$dir/bin/promtool"
    return 0
  fi
  echo "tools.sh: installing promtool (Debian package prometheus) into ${dir#"$ROOT"/}" >&2
  mkdir -p "$TOOLS"
  # Unpacked beside its place and renamed into it when complete: an interrupted install is
  # never used, and two runs at once each finish their own copy.
  local tmp
  tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  apt_download prometheus "$tmp"
  local deb
  deb="$(echo "$tmp"/prometheus_*.deb)"
  [[ -f "$deb" ]] || die "apt-get download left no prometheus_*.deb"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/bin/promtool
  mkdir -p "$tmp/bin"
  mv "$tmp/usr/bin/promtool" "$tmp/bin/promtool"
  dpkg-deb --field "$deb" Package Version >"$tmp/.installed"
  rm -rf "$tmp/usr" "$deb"
  chmod 0755 "$tmp"
  "$tmp/bin/promtool" --version >/dev/null 2>&1 || die "the unpacked promtool does not run"
  if [[ -f "$dir/.installed" ]]; then
    rm -rf "$tmp"  # a run beside this one installed it meanwhile: leave its copy in use alone
  else
    rm -rf "$dir"
    mv "$tmp" "$dir"
  fi
  trap - EXIT
  echo "$dir/bin/promtool"
}

case "${1:-}" in
  promtool) promtool ;;
  *) die "usage: scripts/tools.sh promtool" ;;
esac
