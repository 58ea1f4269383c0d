//! The Kubernetes manifests under deploy/k8s are valid, docker-compose.yml parses, and
//! `scripts/services.sh sweep` cleans up after failed test runs.
//!
//! Runs `deploy/validate.sh`, the same script operators run: it installs the pinned
//! `kubernetes-validate` from PyPI into `.local/pytools/kv` on first use (so it needs python3 with
//! pip, and PyPI once), builds the base and every overlay, validates each resource against the
//! Kubernetes schemas and checks the cross-references (deploy/README.md lists them). This test
//! asserts that the script passed, and from the JSON summary it prints last that it found no
//! problem and read every file under deploy/k8s.

use std::path::{Path, PathBuf};
use std::process::Command;
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

#[test]
fn kubernetes_manifests_validate() {
    let root = repo_root();
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(root.join("deploy/validate.sh"))
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash deploy/validate.sh: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "deploy/validate.sh exited with {} after {:.1?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        output.status,
        started.elapsed()
    );
    // Shown on failure, and with `cargo test -- --nocapture`; the assertions below refer to it.
    println!("{report}");

    let Some(summary) = stdout.lines().rev().find_map(|line| line.strip_prefix("SUMMARY ")) else {
        panic!(
            "deploy/validate.sh printed no SUMMARY line: it did not get to validate anything (python3 with pip, \
             and PyPI on the first run, are needed to install kubernetes-validate); its output is above"
        );
    };
    let summary: Value =
        serde_json::from_str(summary).unwrap_or_else(|e| panic!("deploy/validate.sh's SUMMARY line is not JSON: {e}"));

    let problems = strings(&summary["problems"]);
    assert!(
        problems.is_empty(),
        "deploy/validate.sh found {} problem(s) in deploy/k8s (its output is above):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
    assert!(output.status.success(), "deploy/validate.sh reported no problem but failed (its output is above)");

    // As in validate.py, an overlay that generates its Secret from a real secrets.env leaves the .example unread.
    let read = strings(&summary["files"]);
    let unread: Vec<String> = files_under(&root.join("deploy/k8s"), &root)
        .into_iter()
        .filter(|file| !file.ends_with(".example") && !read.contains(&file.as_str()))
        .collect();
    assert!(unread.is_empty(), "deploy/validate.sh did not read {unread:?}: does no kustomization use them?");

    let resources = summary["resources"].as_u64().unwrap_or(0);
    let versions = strings(&summary["kubernetes_versions"]);
    assert!(resources > 0 && !versions.is_empty(), "deploy/validate.sh validated nothing (its output is above)");
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
    // Named as `ledgerflow bench` names its sandboxes.
    let old_bench = format!("ledgerflow_bench_{}_{}", now - 2 * 86400, tag());
    let kept_bench = format!("ledgerflow_bench_{}_{}_raw", now - 7200, tag());
    for name in [&old, &young, &old_bench, &kept_bench] {
        client.database(name).collection::<Document>("marker").insert_one(doc! { "left": "behind" }).await.unwrap();
    }
    // Exchanges as a test's topology (`lf-test-<secs>-<tag>.<name>`) and the bench's name them.
    let amqp = ledgerflow_messaging::connect(&ledgerflow_tests::amqp_uri(), "sweep-test").await.unwrap();
    let channel = amqp.create_channel().await.unwrap();
    let old_exchange = format!("lf-test-{}-{}.transfers", now - 7200, tag());
    let young_exchange = format!("lf-test-{}-{}.transfers", now, tag());
    let old_bench_exchange = format!("ledgerflow_bench_{}_{}.results", now - 2 * 86400, tag());
    let kept_bench_exchange = format!("ledgerflow_bench_{}_{}.results", now - 7200, tag());
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
    for name in [&young, &old, &old_bench, &kept_bench] {
        client.database(name).drop().await.unwrap();
    }
    assert!(!names.contains(&old), "{old} survived the sweep: {names:?}");
    assert!(names.contains(&young), "{young} was swept although it is new");
    assert!(!names.contains(&old_bench), "{old_bench} survived the sweep: {names:?}");
    assert!(names.contains(&kept_bench), "{kept_bench} was swept although under a day old");

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
