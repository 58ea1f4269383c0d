#!/usr/bin/env bash
# Prints deploy/monitoring/ledgerflow.rules.yml as a PrometheusRule for the Prometheus Operator.
# The rules are the file's own lines (from `groups:` on), indented under `spec:`, so the two
# cannot say different things; tests/deploy/monitoring.rs fails when the committed manifest is
# not this script's output. After editing the rules file:
#   deploy/monitoring/prometheusrule.sh > deploy/k8s/components/monitoring/prometheusrule.yaml
set -euo pipefail
RULES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ledgerflow.rules.yml"
grep -q '^groups:' "$RULES" || { echo "prometheusrule.sh: no 'groups:' in $RULES" >&2; exit 1; }
cat <<'HEADER'
# GENERATED from deploy/monitoring/ledgerflow.rules.yml by deploy/monitoring/prometheusrule.sh:
# edit the rules file, then run the script (see its first lines). A test fails when they differ.
# Needs the Prometheus Operator's CRDs; its Prometheus must select this rule (ruleSelector,
# ruleNamespaceSelector): add the labels it wants in your overlay (deploy/README.md).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ledgerflow
  labels:
    app.kubernetes.io/name: ledgerflow
    app.kubernetes.io/component: monitoring
    app.kubernetes.io/part-of: ledgerflow
spec:
HEADER
# Blank lines stay blank (no trailing spaces).
sed -n '/^groups:/,$p' "$RULES" | sed 's/^./  &/'
