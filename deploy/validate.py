#!/usr/bin/env python3
"""Checks LedgerFlow's Kubernetes manifests. Run it through deploy/validate.sh, which installs the tools.

kustomize itself (`kubectl kustomize DIR`) renders every kustomization under deploy/k8s: the base and
each overlay. On what it renders:
  1. each resource is validated with kubernetes-validate, strictly, for each Kubernetes version in
     LEDGERFLOW_KUBE_VERSIONS; KEDA's ScaledObject and the Prometheus Operator's PrometheusRule, CRDs
     it has no schema for, get a structural check;
  2. LedgerFlow's own rules, which no schema knows: cross-references (one pinned image, selectors,
     ports, ConfigMap and Secret keys, the ScaledObject's target and partition queues, one
     LEDGERFLOW_PARTITIONS for all) and the deployment rules in deploy/README.md.
On the sources, what kustomize lets pass silently:
  3. no YAML file gives a key twice (kustomize keeps the last one in kustomization.yaml and patches);
  4. some build reads every file: removed from a copy of the tree, it makes a build fail or render
     something else (kustomize reads only the files a kustomization names, and ignores the rest).
Last line: `SUMMARY {json}` (read by tests/deploy.rs). Exit status 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv
from kubernetes_validate.version import __version__ as KV_VERSION

# The oldest Kubernetes we support, and the newest the pinned kubernetes-validate knows.
KUBE_VERSIONS = os.environ.get("LEDGERFLOW_KUBE_VERSIONS", f"1.30 {kv.major_minor(kv.latest_version())}").split()
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")  # the names kustomize reads
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of")
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
# The rabbitmq trigger's metadata keys KEDA 2.x knows (https://keda.sh/docs/latest/scalers/rabbitmq-queue/),
# less `host` (credentials belong in a Secret, read with hostFromEnv) and the deprecated `queueLength`.
# Anything else is reported: a misspelt key (`userRegex`) would leave KEDA on the default.
RABBITMQ_TRIGGER_METADATA = {"protocol", "mode", "value", "activationValue", "queueName", "vhostName", "hostFromEnv",
                             "usernameFromEnv", "passwordFromEnv", "unsafeSsl", "timeout", "useRegex", "pageSize",
                             "operation", "excludeUnacknowledged"}
# LedgerFlow's own defaults and limits (crates/ledgerflow/src/main.rs, crates/messaging/src/topology.rs).
DEFAULT_PREFIX, DEFAULT_PARTITIONS, MAX_PARTITIONS = "ledgerflow", "8", 1024

problems: dict[str, dict[str, None]] = {}  # message -> where it was seen (an ordered set)


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key given twice in one mapping (PyYAML would keep the last one)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        if duplicates := sorted({str(key) for key in keys if keys.count(key) > 1}):
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def get(node, *keys, default=None):
    """node[k1][k2]..., or default when a level is missing or not a mapping/list."""
    for key in keys:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def rid(doc: dict) -> str:
    return f"{doc.get('kind')}/{get(doc, 'metadata', 'name')}"


def problem(where: str, message: str) -> None:
    problems.setdefault(message, {})[where] = None


def kustomize(kubectl: str, kdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl, "kustomize", str(kdir)], check=False, capture_output=True, text=True, timeout=120)


def pod_template(doc: dict):
    if doc.get("kind") == "CronJob":
        return get(doc, "spec", "jobTemplate", "spec", "template")
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return get(doc, "spec", "template")
    return None


def containers(doc: dict) -> list:
    return get(pod_template(doc), "spec", "containers", default=[]) or []


def pod_labels(doc: dict) -> dict:
    return get(pod_template(doc), "metadata", "labels", default={}) or {}


def ports(doc: dict) -> set:
    """Names and numbers of the container ports of a workload's pods."""
    return {p.get(key) for c in containers(doc) for p in c.get("ports", []) for key in ("name", "containerPort")}


def pinned(image: str) -> bool:
    """A digest, or a tag other than latest (in `registry:5000/ledgerflow` the port is no tag)."""
    last = image.rpartition("/")[2]
    return "@" in last or (":" in last and last.rpartition(":")[2] != "latest")


def validate_schemas(name: str, docs: list) -> bool:
    ok = True
    for doc in docs:
        if not (isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")):
            problem(name, "a YAML document without apiVersion and kind")
            ok = False
            continue
        if str(doc["apiVersion"]).startswith("monitoring.coreos.com/"):
            rule_ok = check_prometheus_rule_structure(name, doc)
            print(f"  {'ok*' if rule_ok else 'FAIL':4} {rid(doc)}   (*Prometheus Operator CRD: structure only, no schema)")
            ok &= rule_ok
            continue
        if str(doc["apiVersion"]).startswith("keda.sh/"):
            keda_ok = check_keda_structure(name, doc)
            print(f"  {'ok*' if keda_ok else 'FAIL':4} {rid(doc)}   (*KEDA CRD: structure only, no schema)")
            ok &= keda_ok
            continue
        errors: dict[str, list[str]] = {}
        for version in KUBE_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top level)"
                errors.setdefault(f"{path}: {e.message}", []).append(version)
            except (kv.SchemaNotFoundError, kv.VersionNotSupportedError, kv.InvalidSchemaError) as e:
                errors.setdefault(f"{e.message} (apiVersion/kind typo, or API not served there?)", []).append(version)
        for message, versions in errors.items():
            problem(name, f"{rid(doc)} is invalid for Kubernetes {', '.join(versions)} (strict): {message}")
        print(f"  {'ok' if not errors else 'FAIL':4} {rid(doc)}")
        ok &= not errors
    return ok


def check_keda_structure(name: str, doc: dict) -> bool:
    """What KEDA's CRD schema would reject, for the fields we use (no KEDA schema ships with kubernetes-validate)."""
    errors, spec = [], doc.get("spec")
    if doc.get("kind") != "ScaledObject" or doc.get("apiVersion") != "keda.sh/v1alpha1":
        errors.append("only keda.sh/v1alpha1 ScaledObject is checked here; extend validate.py")
    elif not isinstance(spec, dict) or not get(doc, "metadata", "name"):
        errors.append("needs metadata.name and a spec mapping")
    else:
        if unknown := sorted(set(spec) - SCALED_OBJECT_SPEC):
            errors.append(f"unknown spec fields {unknown}")
        if not isinstance(get(spec, "scaleTargetRef", "name"), str):
            errors.append("spec.scaleTargetRef.name must be a string")
        for field in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
            if field in spec and not (type(spec[field]) is int and spec[field] >= 0):
                errors.append(f"spec.{field} must be a non-negative integer")
        triggers = spec.get("triggers")
        if not (isinstance(triggers, list) and triggers):
            errors.append("spec.triggers must be a non-empty list")
        for i, t in enumerate(triggers if isinstance(triggers, list) else []):
            meta = get(t, "metadata")
            if not isinstance(get(t, "type"), str) or not isinstance(meta, dict):
                errors.append(f"spec.triggers.{i} needs a type and a metadata mapping")
            elif bad := sorted(key for key, value in meta.items() if not isinstance(value, str)):
                errors.append(f"spec.triggers.{i}.metadata values must be strings (quote them): {bad}")
    for message in errors:
        problem(name, f"{rid(doc)} (KEDA structure): {message}")
    return not errors


def check_prometheus_rule_structure(name: str, doc: dict) -> bool:
    """What the Prometheus Operator's CRD schema would reject in a PrometheusRule (none ships with
    kubernetes-validate). The rules themselves are promtool's to check (tests/deploy/monitoring.rs)."""
    errors, spec = [], doc.get("spec")
    if doc.get("kind") != "PrometheusRule" or doc.get("apiVersion") != "monitoring.coreos.com/v1":
        errors.append("only monitoring.coreos.com/v1 PrometheusRule is checked here; extend validate.py")
    elif not isinstance(spec, dict) or not get(doc, "metadata", "name"):
        errors.append("needs metadata.name and a spec mapping")
    else:
        if unknown := sorted(set(spec) - {"groups"}):
            errors.append(f"unknown spec fields {unknown}")
        groups = spec.get("groups")
        if not (isinstance(groups, list) and groups):
            errors.append("spec.groups must be a non-empty list")
        for i, group in enumerate(groups if isinstance(groups, list) else []):
            if not (isinstance(get(group, "name"), str) and isinstance(get(group, "rules"), list)):
                errors.append(f"spec.groups.{i} needs a name and a list of rules")
                continue
            for j, rule in enumerate(group["rules"]):
                where = f"spec.groups.{i}.rules.{j}"
                if not isinstance(rule, dict) or ("alert" in rule) == ("record" in rule):
                    errors.append(f"{where} needs exactly one of alert and record")
                elif not isinstance(rule.get("expr"), str):
                    errors.append(f"{where}.expr must be a string")
                elif bad := sorted(f"{field}.{key}" for field in ("labels", "annotations")
                                   for key, value in (rule.get(field) or {}).items() if not isinstance(value, str)):
                    errors.append(f"{where}: label and annotation values must be strings (quote them): {bad}")
    for message in errors:
        problem(name, f"{rid(doc)} (PrometheusRule structure): {message}")
    return not errors


class Rules:
    """LedgerFlow's rules over one rendered build. complete: an overlay, which must define its Secrets and pin
    its image."""

    def __init__(self, name: str, docs: list, complete: bool):
        self.name, self.docs, self.complete = name, docs, complete
        self.by_id = {rid(doc): doc for doc in docs}
        self.workloads = [doc for doc in docs if pod_template(doc)]
        self.configmaps = {get(doc, "metadata", "name"): get(doc, "data", default={})
                           for doc in docs if doc.get("kind") == "ConfigMap"}
        self.secrets = {get(doc, "metadata", "name"): {
            **{k: base64.b64decode(v).decode() for k, v in get(doc, "data", default={}).items()},
            **get(doc, "stringData", default={})} for doc in docs if doc.get("kind") == "Secret"}

    def fail(self, doc: dict, message: str) -> None:
        problem(self.name, f"{rid(doc)}: {message}")

    def run(self) -> None:
        for doc in self.docs:
            if missing := [label for label in LABELS if label not in get(doc, "metadata", "labels", default={})]:
                self.fail(doc, f"metadata.labels lacks {missing}")
            {"Service": self.service, "PodDisruptionBudget": self.pdb, "ScaledObject": self.scaled_object,
             "Secret": self.secret}.get(doc["kind"], lambda doc: None)(doc)
        images = sorted({str(c.get("image")) for w in self.workloads for c in containers(w)})
        if self.workloads and len(images) != 1:  # a component may have no workload
            problem(self.name, f"Deployments/CronJobs must all run one image, not {images}")
        elif self.complete and not pinned(images[0]):
            problem(self.name, f"image {images[0]} has no tag (or :latest): an overlay pins an immutable one "
                    "with `images:` (does its name match the base's `ledgerflow`?)")
        for w in self.workloads:
            self.workload(w)
        self.partitions_agree()

    def env_value(self, w: dict, name: str, default: str | None = None):
        """What env var `name` is in the first container of w: env (value or configMapKeyRef) over envFrom
        ConfigMaps (the last one naming it wins), else default. A secretKeyRef reads as the Secret's value
        where the build has the Secret, else as None."""
        c = get(containers(w), 0, default={})
        for env in c.get("env", []):
            if env.get("name") == name:
                if "value" in env:
                    return env["value"]
                if ref := get(env, "valueFrom", "configMapKeyRef"):
                    return self.configmaps.get(ref.get("name"), {}).get(ref.get("key"))
                if ref := get(env, "valueFrom", "secretKeyRef"):
                    return self.secrets.get(ref.get("name"), {}).get(ref.get("key"))
                return None
        value = default
        for source in c.get("envFrom", []):
            value = self.configmaps.get(get(source, "configMapRef", "name"), {}).get(name, value)
        return value

    def partition_count(self) -> int | None:
        """LEDGERFLOW_PARTITIONS of the worker Deployment (partitions_agree checks the others match)."""
        workers = [w for w in self.workloads if get(containers(w), 0, "args", 0) == "worker"]
        value = self.env_value(workers[0], "LEDGERFLOW_PARTITIONS", DEFAULT_PARTITIONS) if workers else None
        valid = isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_PARTITIONS
        return int(value) if valid else None

    def partitions_agree(self) -> None:
        """Gateways and workers must spread commands over the same partitions: a gateway with another count
        hashes accounts to other queues, and a worker with fewer never consumes the rest. Set explicitly, so
        that a new release with another built-in default cannot split a rolling update."""
        counts = {rid(w): self.env_value(w, "LEDGERFLOW_PARTITIONS") for w in self.workloads}
        for w in self.workloads:
            value = counts[rid(w)]
            if value is None:
                self.fail(w, "LEDGERFLOW_PARTITIONS is not set (put it in the ConfigMap: gateways and workers must agree)")
                continue
            if not (isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_PARTITIONS):
                self.fail(w, f"LEDGERFLOW_PARTITIONS must be a whole number in 1..{MAX_PARTITIONS}, got {value!r}")
        if len(set(counts.values())) > 1:
            problem(self.name, "all workloads must use the same LEDGERFLOW_PARTITIONS (set it once, in the "
                    f"ConfigMap), not {counts}")

    def selected(self, selector: dict, doc: dict):
        """The one workload whose pods carry all of selector's labels (else None, and a problem)."""
        matches = [w for w in self.workloads if selector and selector.items() <= pod_labels(w).items()]
        if len(matches) != 1:
            self.fail(doc, f"selector {selector} must match the pods of one workload, matches {[rid(w) for w in matches]}")
        return matches[0] if len(matches) == 1 else None

    def workload(self, w: dict) -> None:
        pod, labels = get(pod_template(w), "spec", default={}), pod_labels(w)
        if missing := [label for label in LABELS if label not in labels]:
            self.fail(w, f"pod template labels lack {missing}")
        selector = get(w, "spec", "selector", "matchLabels")
        if selector is not None and not selector.items() <= labels.items():
            self.fail(w, f"spec.selector {selector} does not match its own pod labels {labels}")
        if get(pod, "securityContext", "runAsNonRoot") is not True:
            self.fail(w, "pod securityContext.runAsNonRoot must be true")
        if get(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault":
            self.fail(w, "pod securityContext.seccompProfile.type must be RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            self.fail(w, "automountServiceAccountToken must be false (LedgerFlow does not use the Kubernetes API)")
        annotations = get(pod_template(w), "metadata", "annotations", default={})
        scrape_port = annotations.get("prometheus.io/port")
        if annotations.get("prometheus.io/scrape") == "true" and int(scrape_port or 0) not in ports(w):
            self.fail(w, f"prometheus.io/port {scrape_port!r} is not a container port")
        for c in containers(w):
            self.container(w, c)
        role = (get(containers(w), 0, "args", 0), w["kind"])
        spec, first = w["spec"], containers(w)[0]
        if role == ("gateway", "Deployment"):
            if get(first, "readinessProbe", "httpGet", "path") != "/readyz":
                self.fail(w, "gateway readinessProbe must GET /readyz")
            if get(first, "livenessProbe", "httpGet", "path") != "/healthz":
                self.fail(w, "gateway livenessProbe must GET /healthz")
        elif role == ("worker", "Deployment"):
            targets = {get(doc, "spec", "scaleTargetRef", "name") for doc in self.docs if doc["kind"] == "ScaledObject"}
            if "replicas" not in spec and w["metadata"]["name"] not in targets:
                self.fail(w, "has neither spec.replicas nor a ScaledObject: it would run a single worker")
            if (pod.get("terminationGracePeriodSeconds") or 30) < 60:
                self.fail(w, "workers need terminationGracePeriodSeconds >= 60 to finish in-flight transfers")
        elif role == ("reconcile", "CronJob"):
            job = get(spec, "jobTemplate", "spec", default={})
            if spec.get("concurrencyPolicy") != "Forbid" or job.get("backoffLimit") != 0:
                self.fail(w, "reconcile needs concurrencyPolicy Forbid and backoffLimit 0 (failures must stay visible)")
            if not job.get("activeDeadlineSeconds"):
                self.fail(w, "reconcile needs jobTemplate.spec.activeDeadlineSeconds")
        elif role == ("dispatcher", "Deployment"):
            env = {e.get("name"): e for e in first.get("env", [])}
            # Loosened, the dispatcher would post to the cluster's own services at a user's say.
            for unsafe in ("LEDGERFLOW_WEBHOOK_ALLOW_HTTP", "LEDGERFLOW_WEBHOOK_ALLOW_PRIVATE"):
                if str(get(env, unsafe, "value", default="false")).lower() == "true":
                    self.fail(w, f"{unsafe} must not be true in a deployment")
            if (pod.get("terminationGracePeriodSeconds") or 30) < 15:
                self.fail(w, "the dispatcher needs terminationGracePeriodSeconds >= 15 to finish its attempts")
        else:
            self.fail(w, f"unknown workload {role}: the checks know gateway, worker, dispatcher (Deployments), reconcile (CronJob)")

    def container(self, w: dict, c: dict) -> None:
        where = f"container {c.get('name')}"
        sc, res = c.get("securityContext", {}), c.get("resources", {})
        if (sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True
                or get(sc, "capabilities", "drop") != ["ALL"]):
            self.fail(w, f"{where}: securityContext needs allowPrivilegeEscalation false, "
                      "readOnlyRootFilesystem true, capabilities.drop [ALL]")
        if not (get(res, "requests", "cpu") and get(res, "requests", "memory") and get(res, "limits", "memory")):
            self.fail(w, f"{where}: needs resources.requests.cpu/memory and limits.memory")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = get(c, probe, "httpGet", "port", default=get(c, probe, "tcpSocket", "port"))
            if port is not None and port not in ports(w):
                self.fail(w, f"{where}: {probe} uses port {port!r}, which is not a container port")
        for source in c.get("envFrom", []):
            if (ref := get(source, "configMapRef", "name")) is not None and ref not in self.configmaps:
                self.fail(w, f"{where}: envFrom uses ConfigMap {ref}, which is not defined")
        for env in c.get("env", []):
            for kind, known in (("configMapKeyRef", self.configmaps), ("secretKeyRef", self.secrets)):
                ref = get(env, "valueFrom", kind)
                if not ref or (kind == "secretKeyRef" and not self.complete):
                    continue
                if ref.get("name") not in known:
                    self.fail(w, f"{where}: env {env.get('name')} uses {kind} {ref.get('name')}, which is not defined")
                elif ref.get("key") not in known[ref.get("name")] and not ref.get("optional"):
                    self.fail(w, f"{where}: env {env.get('name')}: {ref.get('name')} has no key {ref.get('key')}")

    def service(self, doc: dict) -> None:
        if w := self.selected(get(doc, "spec", "selector", default={}), doc):
            for port in get(doc, "spec", "ports", default=[]):
                if port.get("targetPort", port.get("port")) not in ports(w):
                    self.fail(doc, f"targetPort {port.get('targetPort')!r} is not a port of {rid(w)}")

    def pdb(self, doc: dict) -> None:
        self.selected(get(doc, "spec", "selector", "matchLabels", default={}), doc)

    def scaled_object(self, doc: dict) -> None:
        spec = doc["spec"]
        ref = spec["scaleTargetRef"]
        target = self.by_id.get(f"{ref.get('kind', 'Deployment')}/{ref['name']}")
        if target is None or get(containers(target), 0, "args", 0) != "worker":
            self.fail(doc, f"scaleTargetRef {ref} must name the worker Deployment")
            return
        if "replicas" in target["spec"]:
            self.fail(target, "spec.replicas is set, but KEDA owns the count (every apply would reset it)")
        if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
            self.fail(doc, "needs 1 <= minReplicaCount <= maxReplicaCount (workers must never scale to zero)")
        worker = containers(target)[0]
        env = {e.get("name"): e for e in worker.get("env", [])}
        prefix = self.env_value(target, "LEDGERFLOW_AMQP_PREFIX", DEFAULT_PREFIX)
        partitions = self.partition_count()
        if partitions is None:
            return  # partitions_agree reports it
        if spec.get("maxReplicaCount", 100) > partitions:
            self.fail(doc, f"maxReplicaCount {spec.get('maxReplicaCount', 100)} exceeds LEDGERFLOW_PARTITIONS "
                      f"{partitions}: a partition has one active consumer, so the extra workers only stand by")
        rabbit = [t["metadata"] for t in spec["triggers"] if t["type"] == "rabbitmq"]
        if not rabbit:
            self.fail(doc, "needs a trigger of type rabbitmq")
        for meta in rabbit:
            if unknown := sorted(set(meta) - RABBITMQ_TRIGGER_METADATA):
                self.fail(doc, f"rabbitmq trigger metadata KEDA does not know or we do not allow: {unknown} "
                          "(a typo? credentials go in a Secret, read with hostFromEnv)")
            # The workers consume the partition queues, so the trigger sums them: only the management API can.
            if (meta.get("protocol"), meta.get("useRegex"), meta.get("operation")) != ("http", "true", "sum"):
                self.fail(doc, "rabbitmq trigger needs protocol http, useRegex \"true\" and operation sum to add up "
                          f"the partition queues, got {meta.get('protocol')!r}, {meta.get('useRegex')!r}, "
                          f"{meta.get('operation')!r}")
            if meta.get("mode") != "QueueLength" or not meta.get("value", "").isdigit() or meta["value"] == "0":
                self.fail(doc, "rabbitmq trigger needs mode QueueLength and a positive whole-number value")
            if meta.get("excludeUnacknowledged") != "true":
                self.fail(doc, "rabbitmq trigger needs excludeUnacknowledged \"true\": unacknowledged messages are "
                          "already prefetched by workers, counting them lets the prefetch alone scale out")
            if not meta.get("pageSize", "100").isdigit() or int(meta.get("pageSize", "100")) < partitions:
                self.fail(doc, f"rabbitmq pageSize {meta.get('pageSize', '100 (default)')} is below "
                          f"LEDGERFLOW_PARTITIONS {partitions}: KEDA would sum only the first page of queues")
            self.partition_regex(doc, meta.get("queueName"), prefix, partitions)
            host_env = env.get(meta.get("hostFromEnv"))
            if host_env is None:
                self.fail(doc, f"rabbitmq hostFromEnv {meta.get('hostFromEnv')!r} must name an env var of the "
                          "worker container (KEDA reads it from there)")
            elif get(host_env, "valueFrom", "secretKeyRef", "optional"):
                self.fail(doc, f"rabbitmq hostFromEnv {meta['hostFromEnv']}: the Secret key must not be optional")
            else:
                url = self.env_value(target, meta["hostFromEnv"])
                if url is not None and not re.match(r"https?://[^/]+/", str(url)):
                    self.fail(doc, f"rabbitmq hostFromEnv {meta['hostFromEnv']} must hold the management API URL, "
                              "http(s)://user:password@host:15672/<vhost>, not an amqp:// URI")

    def partition_regex(self, doc: dict, regex, prefix: str, partitions: int) -> None:
        """queueName, searched (unanchored) the way RabbitMQ's management API does, must match every partition
        queue and nothing else LedgerFlow or a neighbour declares."""
        try:
            pattern = re.compile(regex)
        except (re.error, TypeError) as e:
            self.fail(doc, f"rabbitmq queueName {regex!r} is not a regex: {e}")
            return
        names = [f"{prefix}.transfers.p{i}" for i in range(partitions)]
        if missed := [name for name in names if not pattern.search(name)]:
            self.fail(doc, f"rabbitmq queueName {regex!r} misses the partition queue(s) {missed[:5]} "
                      f"(prefix {prefix!r}, LEDGERFLOW_PARTITIONS {partitions})")
        others = [f"{prefix}.{suffix}" for suffix in ("transfers", "transfers.partitioned", "transfers.retry",
                                                      "transfers.retry.2000ms", "transfers.retry.2000ms.quorum",
                                                      "transfers.expired", "transfers.dead", "results", "roster",
                                                      "workers")]
        others += [f"{prefix}.transfers.p0.old", f"{prefix}.transfers.p0x", f"{prefix}.transfers.px",
                   f"other.{names[0]}", f"other-{names[0]}", names[0].replace(".", "x")]
        if matched := [name for name in others if pattern.search(name)]:
            self.fail(doc, f"rabbitmq queueName {regex!r} also matches {matched}: anchor it (^...$) and escape the dots")

    def secret(self, doc: dict) -> None:
        data = self.secrets[get(doc, "metadata", "name")]
        if empty := sorted(key for key, value in data.items() if not value.strip()):
            self.fail(doc, f"empty values for {empty} (in an env file, a line without `=` gives one)")
        jwt = data.get("LEDGERFLOW_JWT_SECRET")
        if jwt is not None and len(jwt.encode()) < 32:
            self.fail(doc, "LEDGERFLOW_JWT_SECRET must be at least 32 bytes")


def check(name: str, docs: list, complete: bool) -> None:
    print(f"{name}: {len(docs)} resources")
    if not validate_schemas(name, docs):
        print(f"  (LedgerFlow's checks skipped for {name}: fix the problems above first)")
        return
    try:
        Rules(name, docs, complete).run()
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
        problem(name, f"LedgerFlow's checks stopped on a malformed resource: {e!r}")


def files_read(kubectl: str, k8s: Path, files: list[Path], rendered: dict[Path, str]) -> set[Path] | None:
    """The files some build reads, as kustomize itself tells: removed from a copy of the tree, each makes a build
    fail or render something else. None when a plain copy already renders differently (it reads files outside)."""

    def changes(removed: Path | None) -> bool:
        with tempfile.TemporaryDirectory(prefix="ledgerflow-k8s-") as tmp:
            copy = Path(tmp) / k8s.name
            shutil.copytree(k8s, copy, symlinks=True)
            if removed is not None:
                (copy / removed.relative_to(k8s)).unlink()
            # The kustomizations around the file first, the nearest first: usually the first build tells.
            order = sorted(rendered, key=lambda kdir: (removed is None or not removed.is_relative_to(kdir),
                                                       -len(kdir.parts)))
            return any(kustomize(kubectl, copy / kdir.relative_to(k8s)).stdout != rendered[kdir] for kdir in order)

    if changes(None):
        return None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return {path for path, needed in zip(files, pool.map(changes, files)) if needed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubectl", default="kubectl", help="the kubectl whose `kubectl kustomize` renders")
    parser.add_argument("k8s", nargs="?", type=Path, default=Path(__file__).resolve().parent / "k8s",
                        help="the tree of kustomizations (default: deploy/k8s)")
    args = parser.parse_args()
    k8s = args.k8s.resolve()

    def rel(path: Path) -> str:
        """As named in the repository (deploy/k8s/...), also in a copy laid out as .../deploy/k8s."""
        return path.relative_to(k8s.parent.parent).as_posix()

    version = json.loads(subprocess.run([args.kubectl, "version", "--client", "-o", "json"], check=True,
                                        capture_output=True, text=True, timeout=60).stdout)
    tools = {"kubectl": version["clientVersion"]["gitVersion"], "kustomize": version.get("kustomizeVersion"),
             "kubernetes_validate": KV_VERSION}
    print(f"kubectl {tools['kubectl']} (kustomize {tools['kustomize']}), kubernetes-validate {KV_VERSION}, "
          f"Kubernetes {', '.join(KUBE_VERSIONS)} (strict)")

    files = sorted(path for path in k8s.rglob("*") if path.is_file())
    for path in files:
        if path.suffix in (".yaml", ".yml") or path.name in KUSTOMIZATION_FILES:
            try:
                with path.open() as f:
                    list(yaml.load_all(f, Loader=StrictLoader))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                problem(rel(path), f"cannot read YAML: {e}")

    rendered: dict[Path, str] = {}
    kdirs = sorted({path.parent for path in files if path.name in KUSTOMIZATION_FILES})
    builds, total = [], 0
    for kdir in kdirs:
        name = rel(kdir)
        run = kustomize(args.kubectl, kdir)
        if run.returncode != 0:
            problem(name, f"kubectl kustomize failed: {run.stderr.strip()}")
            continue
        rendered[kdir] = run.stdout
        docs = [doc for doc in yaml.safe_load_all(run.stdout) if doc is not None]
        complete = "overlays" in kdir.relative_to(k8s).parts  # an overlay must provide every Secret it uses
        check(name, docs, complete)
        builds, total = builds + [name], total + len(docs)

    read: set[Path] = set()
    if not kdirs:
        problem(rel(k8s), f"no kustomization here ({', '.join(KUSTOMIZATION_FILES)})")
    elif len(rendered) < len(kdirs):
        print("(which files the builds read is told only once every kustomization renders)")
    elif (found := files_read(args.kubectl, k8s, files, rendered)) is None:
        problem(rel(k8s), "a copy of this tree renders differently: a kustomization reads files outside it, "
                "so which files the builds read cannot be told")
    else:
        read = found
        for path in files:
            if path not in read and path.suffix != ".example":  # an overlay may use its secrets.env instead
                problem(rel(path), "no build reads this file: without it every build renders the same "
                        "(kustomize reads only the files a kustomization names)")

    for message, places in problems.items():
        print(f"PROBLEM {message}" + "".join(f"\n    at {place}" for place in places))
    print(f"deploy/validate: {total} resources in {len(builds)} builds, {len(problems)} problem(s)")
    summary = {
        "problems": [f"{message} [at {'; '.join(places)}]" for message, places in problems.items()],
        "builds": builds,
        "resources": total,
        "files_read": sorted(rel(path) for path in read),
        "kubernetes_versions": KUBE_VERSIONS,
        **tools,
    }
    print("SUMMARY " + json.dumps(summary))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
