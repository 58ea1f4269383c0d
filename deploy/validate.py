#!/usr/bin/env python3
"""Validates LedgerFlow's Kubernetes manifests under deploy/k8s. Run it through deploy/validate.sh.

For every directory with a kustomization.yaml (the base and each overlay):
  1. build it: resources, patches, images, namespace and secretGenerator, approximating
     `kustomize build` for the features used here (every file read is checked to exist);
  2. validate each built resource with kubernetes-validate, strictly, for each Kubernetes
     version in LEDGERFLOW_KUBE_VERSIONS; KEDA resources (a CRD no schema here knows) get
     a structural check instead;
  3. check what the schemas cannot: cross-references (image, selectors, ports, ConfigMap and
     Secret keys, the ScaledObject's target and partition queues, one LEDGERFLOW_PARTITIONS
     for all) and the deployment rules in
     deploy/README.md (labels, securityContext, resources, probes, the reconcile CronJob).
If kubectl is on PATH, the output of the real `kubectl kustomize` goes through 2 and 3 as well.
Last line: `SUMMARY {json}` (read by tests/deploy.rs). Exit status 1 when anything is wrong.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv
from kubernetes_validate.version import __version__ as KV_VERSION

DEPLOY = Path(__file__).resolve().parent
K8S = DEPLOY / "k8s"
# The oldest Kubernetes we support, and the newest the pinned kubernetes-validate knows.
KUBE_VERSIONS = os.environ.get("LEDGERFLOW_KUBE_VERSIONS", f"1.30 {kv.major_minor(kv.latest_version())}").split()
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
# What build() understands; anything else in a kustomization.yaml is reported, not ignored.
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "patches", "images", "secretGenerator"}
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
files_read: set[Path] = set()


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key given twice in one mapping (PyYAML would keep the last one)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        if duplicates := sorted({str(key) for key in keys if keys.count(key) > 1}):
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


@dataclass
class Resource:
    origin: str  # the file(s) it comes from, or the command that printed it
    doc: dict

    @property
    def id(self) -> str:
        return f"{self.doc.get('kind')}/{get(self.doc, 'metadata', 'name')}"


def get(node, *keys, default=None):
    """node[k1][k2]..., or default when a level is missing or not a mapping/list."""
    for key in keys:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def rel(path: Path) -> str:
    return str(path.resolve().relative_to(DEPLOY.parent))


def problem(build: str, where: str, message: str) -> None:
    problems.setdefault(message, {})[where if where == build else f"{where}  ({build})"] = None


def problem_count() -> int:
    return sum(len(places) for places in problems.values())


def load_yaml(path: Path, build: str) -> list:
    files_read.add(path.resolve())
    try:
        with path.resolve().open() as f:
            return [doc for doc in yaml.load_all(f, Loader=StrictLoader) if doc is not None]
    except (OSError, yaml.YAMLError) as e:
        problem(build, rel(path), f"cannot read YAML: {e}")
        return []


def read_env_file(path: Path, build: str) -> dict:
    """KEY=VALUE lines, as kustomize's secretGenerator `envs:` reads them."""
    files_read.add(path.resolve())
    data = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                problem(build, f"{rel(path)}:{number}", "expected KEY=VALUE")
            data[key.strip()] = value
    return data


def merge(target: dict, patch: dict) -> None:
    """Strategic merge, simplified: maps merge, lists of named maps merge by name, the rest is replaced."""
    for key, value in patch.items():
        old = target.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merge(old, value)
        elif isinstance(value, list) and isinstance(old, list) and all(
                isinstance(item, dict) and "name" in item for item in old + value):
            by_name = {item["name"]: item for item in old}
            for item in value:
                merge(by_name[item["name"]], item) if item["name"] in by_name else old.append(item)
        else:
            target[key] = value


def image_name(image: str) -> str:
    head, _, tail = image.rpartition(":")
    return head if head and "/" not in tail else image


def build(kdir: Path, name: str) -> list[Resource]:
    kfile = kdir / "kustomization.yaml"
    where = rel(kfile)
    docs = load_yaml(kfile, name)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        problem(name, where, "expected one YAML mapping")
        return []
    k = docs[0]
    if unknown := sorted(set(k) - KUSTOMIZATION_KEYS):
        problem(name, where, f"fields deploy/validate.py does not understand (extend build()): {unknown}")
    if k.get("kind") != "Kustomization" or not str(k.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
        problem(name, where, "expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization")

    out: list[Resource] = []
    for entry in k.get("resources", []):
        path = kdir / entry
        if (path / "kustomization.yaml").is_file():
            out += build(path, name)
        elif path.is_file():
            out += [Resource(rel(path), doc) for doc in load_yaml(path, name)]
        else:
            problem(name, where, f"resources: {entry} is neither a file nor a kustomization directory")
    for gen in k.get("secretGenerator", []):
        data = {}
        for env in gen.get("envs", []):
            if (kdir / env).is_file():
                data.update(read_env_file(kdir / env, name))
            else:
                problem(name, where, f"secretGenerator {gen.get('name')}: envs file {env} does not exist")
        meta = {"name": gen.get("name"), "labels": get(gen, "options", "labels", default={})}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": gen.get("type", "Opaque")}
        out.append(Resource(where, {**secret, "stringData": data}))
    for entry in k.get("patches", []):
        path = kdir / str(get(entry, "path"))
        if not path.is_file():
            problem(name, where, f"patches: {entry} is not a patch file that exists (inline patches unsupported)")
            continue
        for patch in load_yaml(path, name):
            target = next((r for r in out if r.doc.get("kind") == patch.get("kind")
                           and get(r.doc, "metadata", "name") == get(patch, "metadata", "name")), None)
            if target is None:
                problem(name, rel(path), f"patches {patch.get('kind')}/{get(patch, 'metadata', 'name')}, "
                        f"which {where} does not contain")
            else:
                merge(target.doc, patch)
                target.origin += f" + {rel(path)}"
    for image in k.get("images", []):
        containers_hit = [c for r in out for c in containers(r.doc) if image_name(c.get("image", "")) == image["name"]]
        if not containers_hit:
            problem(name, where, f"images: {image['name']} matches no container image, so it changes nothing")
        for c in containers_hit:
            tag = image.get("newTag") or c["image"][len(image_name(c["image"])) + 1:]
            c["image"] = image.get("newName", image["name"]) + (f":{tag}" if tag else "")
    if "namespace" in k:
        for r in out:
            if r.doc.get("kind") not in CLUSTER_SCOPED:
                r.doc.setdefault("metadata", {})["namespace"] = k["namespace"]
    return out


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


def validate_schemas(name: str, resources: list[Resource]) -> bool:
    ok = True
    for r in resources:
        if not (isinstance(r.doc, dict) and r.doc.get("apiVersion") and r.doc.get("kind")):
            problem(name, r.origin, "a YAML document without apiVersion and kind")
            ok = False
            continue
        if str(r.doc["apiVersion"]).startswith("keda.sh/"):
            keda_ok = check_keda_structure(name, r)
            print(f"  {'ok*' if keda_ok else 'FAIL':4} {r.id:44} {r.origin}   (*KEDA CRD: structure only, no schema)")
            ok &= keda_ok
            continue
        errors: dict[str, list[str]] = {}
        for version in KUBE_VERSIONS:
            try:
                kv.validate(r.doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top level)"
                errors.setdefault(f"{path}: {e.message}", []).append(version)
            except (kv.SchemaNotFoundError, kv.VersionNotSupportedError, kv.InvalidSchemaError) as e:
                errors.setdefault(f"{e.message} (apiVersion/kind typo, or API not served there?)", []).append(version)
        for message, versions in errors.items():
            problem(name, r.origin, f"{r.id} is invalid for Kubernetes {', '.join(versions)} (strict): {message}")
        print(f"  {'ok' if not errors else 'FAIL':4} {r.id:44} {r.origin}")
        ok &= not errors
    return ok


def check_keda_structure(name: str, r: Resource) -> bool:
    """What KEDA's CRD schema would reject, for the fields we use (no KEDA schema ships with kubernetes-validate)."""
    errors, spec = [], r.doc.get("spec")
    if r.doc.get("kind") != "ScaledObject" or r.doc.get("apiVersion") != "keda.sh/v1alpha1":
        errors.append("only keda.sh/v1alpha1 ScaledObject is checked here; extend validate.py")
    elif not isinstance(spec, dict) or not get(r.doc, "metadata", "name"):
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
        problem(name, r.origin, f"{r.id} (KEDA structure): {message}")
    return not errors


class Rules:
    """Cross-references and deployment rules over one build. complete: an overlay, which must define its Secrets."""

    def __init__(self, name: str, resources: list[Resource], complete: bool):
        self.name, self.resources, self.complete = name, resources, complete
        self.by_id = {r.id: r for r in resources}
        self.workloads = [r for r in resources if pod_template(r.doc)]
        self.configmaps = {get(r.doc, "metadata", "name"): get(r.doc, "data", default={})
                           for r in resources if r.doc.get("kind") == "ConfigMap"}
        self.secrets = {get(r.doc, "metadata", "name"): {
            **{k: base64.b64decode(v).decode() for k, v in get(r.doc, "data", default={}).items()},
            **get(r.doc, "stringData", default={})} for r in resources if r.doc.get("kind") == "Secret"}

    def fail(self, r: Resource, message: str) -> None:
        problem(self.name, r.origin, f"{r.id}: {message}")

    def run(self) -> None:
        ids = [r.id for r in self.resources]
        for r in self.resources:
            if ids.count(r.id) > 1:
                self.fail(r, "is defined more than once")
            if missing := [label for label in LABELS if label not in get(r.doc, "metadata", "labels", default={})]:
                self.fail(r, f"metadata.labels lacks {missing}")
            {"Service": self.service, "PodDisruptionBudget": self.pdb, "ScaledObject": self.scaled_object,
             "Secret": self.secret}.get(r.doc["kind"], lambda r: None)(r)
        images = sorted({str(c.get("image")) for w in self.workloads for c in containers(w.doc)})
        if len(images) != 1:
            problem(self.name, "workloads", f"Deployments/CronJobs must all run one image, not {images}")
        for w in self.workloads:
            self.workload(w)
        self.partitions_agree()

    def env_value(self, w: Resource, name: str, default: str | None = None):
        """What env var `name` is in the first container of w: env (value or configMapKeyRef) over envFrom
        ConfigMaps (the last one naming it wins), else default. A secretKeyRef reads as the Secret's value
        where the build has the Secret, else as None."""
        c = get(containers(w.doc), 0, default={})
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
        workers = [w for w in self.workloads if get(containers(w.doc), 0, "args", 0) == "worker"]
        value = self.env_value(workers[0], "LEDGERFLOW_PARTITIONS", DEFAULT_PARTITIONS) if workers else None
        valid = isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_PARTITIONS
        return int(value) if valid else None

    def partitions_agree(self) -> None:
        """Gateways and workers must spread commands over the same partitions: a gateway with another count
        hashes accounts to other queues, and a worker with fewer never consumes the rest. Set explicitly, so
        that a new release with another built-in default cannot split a rolling update."""
        counts = {w.id: self.env_value(w, "LEDGERFLOW_PARTITIONS") for w in self.workloads}
        for w in self.workloads:
            value = counts[w.id]
            if value is None:
                self.fail(w, "LEDGERFLOW_PARTITIONS is not set (put it in the ConfigMap: gateways and workers must agree)")
                continue
            if not (isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_PARTITIONS):
                self.fail(w, f"LEDGERFLOW_PARTITIONS must be a whole number in 1..{MAX_PARTITIONS}, got {value!r}")
        if len(set(counts.values())) > 1:
            problem(self.name, "workloads", "all workloads must use the same LEDGERFLOW_PARTITIONS (set it once, in "
                    f"the ConfigMap), not {counts}")

    def selected(self, selector: dict, r: Resource):
        """The one workload whose pods carry all of selector's labels (else None, and a problem)."""
        matches = [w for w in self.workloads if selector and selector.items() <= pod_labels(w.doc).items()]
        if len(matches) != 1:
            self.fail(r, f"selector {selector} must match the pods of one workload, matches {[w.id for w in matches]}")
        return matches[0] if len(matches) == 1 else None

    def workload(self, w: Resource) -> None:
        pod, labels = get(pod_template(w.doc), "spec", default={}), pod_labels(w.doc)
        if missing := [label for label in LABELS if label not in labels]:
            self.fail(w, f"pod template labels lack {missing}")
        selector = get(w.doc, "spec", "selector", "matchLabels")
        if selector is not None and not selector.items() <= labels.items():
            self.fail(w, f"spec.selector {selector} does not match its own pod labels {labels}")
        if get(pod, "securityContext", "runAsNonRoot") is not True:
            self.fail(w, "pod securityContext.runAsNonRoot must be true")
        if get(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault":
            self.fail(w, "pod securityContext.seccompProfile.type must be RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            self.fail(w, "automountServiceAccountToken must be false (LedgerFlow does not use the Kubernetes API)")
        annotations = get(pod_template(w.doc), "metadata", "annotations", default={})
        scrape_port = annotations.get("prometheus.io/port")
        if annotations.get("prometheus.io/scrape") == "true" and int(scrape_port or 0) not in ports(w.doc):
            self.fail(w, f"prometheus.io/port {scrape_port!r} is not a container port")
        for c in containers(w.doc):
            self.container(w, c)
        role = (get(containers(w.doc), 0, "args", 0), w.doc["kind"])
        spec, first = w.doc["spec"], containers(w.doc)[0]
        if role == ("gateway", "Deployment"):
            if get(first, "readinessProbe", "httpGet", "path") != "/readyz":
                self.fail(w, "gateway readinessProbe must GET /readyz")
            if get(first, "livenessProbe", "httpGet", "path") != "/healthz":
                self.fail(w, "gateway livenessProbe must GET /healthz")
        elif role == ("worker", "Deployment"):
            targets = {get(r.doc, "spec", "scaleTargetRef", "name") for r in self.resources
                       if r.doc["kind"] == "ScaledObject"}
            if "replicas" not in spec and w.doc["metadata"]["name"] not in targets:
                self.fail(w, "has neither spec.replicas nor a ScaledObject: it would run a single worker")
            if (pod.get("terminationGracePeriodSeconds") or 30) < 60:
                self.fail(w, "workers need terminationGracePeriodSeconds >= 60 to finish in-flight transfers")
        elif role == ("reconcile", "CronJob"):
            job = get(spec, "jobTemplate", "spec", default={})
            if spec.get("concurrencyPolicy") != "Forbid" or job.get("backoffLimit") != 0:
                self.fail(w, "reconcile needs concurrencyPolicy Forbid and backoffLimit 0 (failures must stay visible)")
            if not job.get("activeDeadlineSeconds"):
                self.fail(w, "reconcile needs jobTemplate.spec.activeDeadlineSeconds")
        else:
            self.fail(w, f"unknown workload {role}: the checks know gateway, worker (Deployments), reconcile (CronJob)")

    def container(self, w: Resource, c: dict) -> None:
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
            if port is not None and port not in ports(w.doc):
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

    def service(self, r: Resource) -> None:
        if w := self.selected(get(r.doc, "spec", "selector", default={}), r):
            for port in get(r.doc, "spec", "ports", default=[]):
                if port.get("targetPort", port.get("port")) not in ports(w.doc):
                    self.fail(r, f"targetPort {port.get('targetPort')!r} is not a port of {w.id}")

    def pdb(self, r: Resource) -> None:
        self.selected(get(r.doc, "spec", "selector", "matchLabels", default={}), r)

    def scaled_object(self, r: Resource) -> None:
        spec = r.doc["spec"]
        ref = spec["scaleTargetRef"]
        target = self.by_id.get(f"{ref.get('kind', 'Deployment')}/{ref['name']}")
        if target is None or get(containers(target.doc), 0, "args", 0) != "worker":
            self.fail(r, f"scaleTargetRef {ref} must name the worker Deployment")
            return
        if "replicas" in target.doc["spec"]:
            self.fail(target, "spec.replicas is set, but KEDA owns the count (every apply would reset it)")
        if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
            self.fail(r, "needs 1 <= minReplicaCount <= maxReplicaCount (workers must never scale to zero)")
        worker = containers(target.doc)[0]
        env = {e.get("name"): e for e in worker.get("env", [])}
        prefix = self.env_value(target, "LEDGERFLOW_AMQP_PREFIX", DEFAULT_PREFIX)
        partitions = self.partition_count()
        if partitions is None:
            return  # partitions_agree reports it
        if spec.get("maxReplicaCount", 100) > partitions:
            self.fail(r, f"maxReplicaCount {spec.get('maxReplicaCount', 100)} exceeds LEDGERFLOW_PARTITIONS "
                      f"{partitions}: a partition has one active consumer, so the extra workers only stand by")
        rabbit = [t["metadata"] for t in spec["triggers"] if t["type"] == "rabbitmq"]
        if not rabbit:
            self.fail(r, "needs a trigger of type rabbitmq")
        for meta in rabbit:
            if unknown := sorted(set(meta) - RABBITMQ_TRIGGER_METADATA):
                self.fail(r, f"rabbitmq trigger metadata KEDA does not know or we do not allow: {unknown} "
                          "(a typo? credentials go in a Secret, read with hostFromEnv)")
            # The workers consume the partition queues, so the trigger sums them: only the management API can.
            if (meta.get("protocol"), meta.get("useRegex"), meta.get("operation")) != ("http", "true", "sum"):
                self.fail(r, "rabbitmq trigger needs protocol http, useRegex \"true\" and operation sum to add up the "
                          f"partition queues, got {meta.get('protocol')!r}, {meta.get('useRegex')!r}, "
                          f"{meta.get('operation')!r}")
            if meta.get("mode") != "QueueLength" or not meta.get("value", "").isdigit() or meta["value"] == "0":
                self.fail(r, "rabbitmq trigger needs mode QueueLength and a positive whole-number value")
            if meta.get("excludeUnacknowledged") != "true":
                self.fail(r, "rabbitmq trigger needs excludeUnacknowledged \"true\": unacknowledged messages are "
                          "already prefetched by workers, counting them lets the prefetch alone scale out")
            if not meta.get("pageSize", "100").isdigit() or int(meta.get("pageSize", "100")) < partitions:
                self.fail(r, f"rabbitmq pageSize {meta.get('pageSize', '100 (default)')} is below "
                          f"LEDGERFLOW_PARTITIONS {partitions}: KEDA would sum only the first page of queues")
            self.partition_regex(r, meta.get("queueName"), prefix, partitions)
            host_env = env.get(meta.get("hostFromEnv"))
            if host_env is None:
                self.fail(r, f"rabbitmq hostFromEnv {meta.get('hostFromEnv')!r} must name an env var of the worker "
                          "container (KEDA reads it from there)")
            elif get(host_env, "valueFrom", "secretKeyRef", "optional"):
                self.fail(r, f"rabbitmq hostFromEnv {meta['hostFromEnv']}: the Secret key must not be optional")
            else:
                url = self.env_value(target, meta["hostFromEnv"])
                if url is not None and not re.match(r"https?://[^/]+/", str(url)):
                    self.fail(r, f"rabbitmq hostFromEnv {meta['hostFromEnv']} must hold the management API URL, "
                              "http(s)://user:password@host:15672/<vhost>, not an amqp:// URI")

    def partition_regex(self, r: Resource, regex, prefix: str, partitions: int) -> None:
        """queueName, searched (unanchored) the way RabbitMQ's management API does, must match every partition
        queue and nothing else LedgerFlow or a neighbour declares."""
        try:
            pattern = re.compile(regex)
        except (re.error, TypeError) as e:
            self.fail(r, f"rabbitmq queueName {regex!r} is not a regex: {e}")
            return
        names = [f"{prefix}.transfers.p{i}" for i in range(partitions)]
        if missed := [name for name in names if not pattern.search(name)]:
            self.fail(r, f"rabbitmq queueName {regex!r} misses the partition queue(s) {missed[:5]} "
                      f"(prefix {prefix!r}, LEDGERFLOW_PARTITIONS {partitions})")
        others = [f"{prefix}.{suffix}" for suffix in ("transfers", "transfers.partitioned", "transfers.retry",
                                                      "transfers.dead", "results", "workers")]
        others += [f"{prefix}.transfers.p0.old", f"{prefix}.transfers.p0x", f"{prefix}.transfers.px",
                   f"other.{names[0]}", f"other-{names[0]}", names[0].replace(".", "x")]
        if matched := [name for name in others if pattern.search(name)]:
            self.fail(r, f"rabbitmq queueName {regex!r} also matches {matched}: anchor it (^...$) and escape the dots")

    def secret(self, r: Resource) -> None:
        jwt = self.secrets[get(r.doc, "metadata", "name")].get("LEDGERFLOW_JWT_SECRET")
        if jwt is not None and len(jwt.encode()) < 32:
            self.fail(r, "LEDGERFLOW_JWT_SECRET must be at least 32 bytes")


def check(name: str, resources: list[Resource], complete: bool, built_cleanly: bool) -> None:
    print(f"{name}: {len(resources)} resources")
    if not validate_schemas(name, resources) or not built_cleanly:
        print(f"  (cross-reference checks skipped for {name}: fix the problems above first)")
        return
    try:
        Rules(name, resources, complete).run()
    except (AttributeError, TypeError, KeyError, ValueError) as e:
        problem(name, name, f"cross-reference checks stopped on a malformed resource: {e!r}")


def kubectl_kustomize(kubectl: str, kdir: Path, name: str) -> list[Resource] | None:
    run = subprocess.run([kubectl, "kustomize", str(kdir)], check=False, capture_output=True, text=True, timeout=120)
    try:
        if run.returncode == 0:
            return [Resource(name, doc) for doc in yaml.load_all(run.stdout, Loader=StrictLoader) if doc]
        problem(name, rel(kdir), f"kubectl kustomize failed: {run.stderr.strip()}")
    except yaml.YAMLError as e:
        problem(name, rel(kdir), f"cannot read the YAML kubectl kustomize printed: {e}")
    return None


def main() -> int:
    print(f"kubernetes-validate {KV_VERSION}, Kubernetes {', '.join(KUBE_VERSIONS)} (strict)")
    kubectl = shutil.which("kubectl") if os.environ.get("LEDGERFLOW_VALIDATE_KUBECTL", "1") != "0" else None
    if not kubectl:
        print("(no kubectl: checking deploy/validate.py's own kustomize approximation only)")
    builds, total = [], 0
    for kdir in sorted(p.parent for p in K8S.rglob("kustomization.yaml")):
        complete = "overlays" in kdir.relative_to(K8S).parts  # an overlay must provide every Secret it uses
        name, before = f"build {rel(kdir)}", problem_count()
        try:
            resources = build(kdir, name)
        except (AttributeError, TypeError, KeyError) as e:
            problem(name, rel(kdir / "kustomization.yaml"), f"cannot build, a field has an unexpected shape: {e!r}")
            resources = []
        check(name, resources, complete, built_cleanly=problem_count() == before)
        builds, total = builds + [name], total + len(resources)
        if kubectl and (resources := kubectl_kustomize(kubectl, kdir, f"kubectl kustomize {rel(kdir)}")) is not None:
            check(f"kubectl kustomize {rel(kdir)}", resources, complete, built_cleanly=True)
            builds, total = builds + [f"kubectl kustomize {rel(kdir)}"], total + len(resources)

    for path in sorted(p for p in K8S.rglob("*") if p.is_file() and p.resolve() not in files_read):
        if path.suffix != ".example":  # an overlay may use its secrets.env instead
            problem("all builds", rel(path), "no kustomization.yaml uses this file (kustomize would ignore it)")

    for message, places in problems.items():
        print(f"PROBLEM {message}" + "".join(f"\n    at {place}" for place in places))
    print(f"deploy/validate: {total} resources in {len(builds)} builds, {len(problems)} problem(s)")
    summary = {
        "problems": [f"{message} [at {'; '.join(places)}]" for message, places in problems.items()],
        "builds": builds,
        "resources": total,
        "files": sorted(rel(p) for p in files_read),
        "kubernetes_versions": KUBE_VERSIONS,
        "kubernetes_validate": KV_VERSION,
    }
    print("SUMMARY " + json.dumps(summary))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
