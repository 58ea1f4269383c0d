//! deploy/monitoring, checked with the real tools: the alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), the PrometheusRule in deploy/k8s says what the rules
//! file says, every query of the Grafana dashboard parses, and neither the rules nor the
//! dashboard name a metric that no LedgerFlow process exports, as read from a real scrape of a
//! gateway and a worker process after a transfer.
//!
//! promtool is Debian's (package `prometheus`), which `scripts/tools.sh promtool` unpacks into
//! `.local/tools` on first use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ledgerflow_tests::{DEADLINE, Pair, spawn_app_with};
use serde_json::{Value, json};

use super::{TempDir, repo_root};

const RULES: &str = "deploy/monitoring/ledgerflow.rules.yml";
const RULES_TESTS: &str = "deploy/monitoring/ledgerflow.rules.test.yml";
const PROMETHEUS_RULE: &str = "deploy/k8s/components/monitoring/prometheusrule.yaml";
const DASHBOARD: &str = "deploy/monitoring/grafana-dashboard.json";

/// Metrics the rules may name that LedgerFlow does not export: kube-state-metrics' (v2) view of
/// the reconcile CronJob and its Jobs, since `ledgerflow reconcile` is a one-shot process that no
/// Prometheus scrapes. Everything else must come from the scrape.
const EXTERNAL_METRICS: &[&str] = &["kube_job_status_failed", "kube_cronjob_status_last_successful_time"];

/// The promtool `scripts/tools.sh` installs (once per test process; the script itself is safe
/// to run from several processes at once).
fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| {
        let out = Command::new("bash")
            .args(["scripts/tools.sh", "promtool"])
            .current_dir(repo_root())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/tools.sh: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/tools.sh promtool failed (it needs apt-get, and root to update the package lists):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
    })
}

/// Runs promtool with `args` in the repository; returns whether it succeeded and its output.
fn run_promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool().display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `promtool check rules` on `file`: the number of rules it found (it fails on any invalid one).
fn check_rules(file: &str) -> usize {
    let (ok, text) = run_promtool(&["check", "rules", file]);
    assert!(ok, "promtool check rules {file} failed:\n{text}");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("SUCCESS: ")?.strip_suffix(" rules found")?.parse().ok())
        .unwrap_or_else(|| panic!("promtool check rules {file} said no rule count:\n{text}"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = check_rules(RULES);
    assert_eq!(rules, rule_exprs(&read(RULES)).len(), "every rule's expr is read by the name check below");
    let (ok, text) = run_promtool(&["test", "rules", RULES_TESTS]);
    assert!(ok, "promtool test rules {RULES_TESTS} failed:\n{text}");
    // Each alert has a test: the unit tests name every alert of the rules file.
    let tests = read(RULES_TESTS);
    for alert in read(RULES).lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname=\"{alert}\"")), "{RULES_TESTS} never shows {alert} firing");
        assert!(tests.contains(&format!("alertname: {alert}")), "{RULES_TESTS} never shows {alert} quiet");
    }
}

#[test]
fn the_prometheus_rule_is_the_rules_file() {
    let out = Command::new("bash")
        .arg("deploy/monitoring/prometheusrule.sh")
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run deploy/monitoring/prometheusrule.sh: {e}"));
    assert!(out.status.success(), "prometheusrule.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout) == read(PROMETHEUS_RULE),
        "{PROMETHEUS_RULE} is not what the rules file makes: run\n  \
         deploy/monitoring/prometheusrule.sh > {PROMETHEUS_RULE}"
    );
}

/// Every dashboard query parses: promtool checks them as recording rules, with Grafana's
/// variables given values.
#[test]
fn dashboard_queries_parse() {
    let queries = dashboard_exprs(&read(DASHBOARD));
    assert!(queries.len() >= 20, "the dashboard has its panels' queries: {queries:?}");
    let tmp = TempDir(std::env::temp_dir().join(format!("ledgerflow-dashboard-{}.yml", uuid::Uuid::new_v4().simple())));
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*");
        // A JSON string is a YAML double-quoted scalar.
        rules.push_str(&format!("      - record: dashboard_query_{i}\n        expr: {}\n", json!(expr)));
    }
    std::fs::write(&tmp.0, rules).expect("write the dashboard's queries");
    assert_eq!(check_rules(&tmp.0.to_string_lossy()), queries.len());
}

/// The `expr` of each rule in a rules file: inline (`expr: ...`), or a block (`expr: |`) of the
/// lines indented below it. Quoted inline expressions are refused, since quotes would hide the
/// names (the count against promtool's catches a rule this misses).
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        let value = value.trim();
        if value.starts_with(['|', '>']) {
            let indent = line.len() - line.trim_start().len();
            let block = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect::<Vec<_>>();
            exprs.push(block.join("\n"));
        } else {
            assert!(!value.starts_with(['"', '\'']), "write rule expressions unquoted: {line}");
            exprs.push(value.to_owned());
        }
    }
    exprs
}

/// Every query of the dashboard, with where it is: the panels' targets (rows' nested panels
/// included) and the template variables' queries.
fn dashboard_exprs(text: &str) -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr =
                    target["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
                out.push((format!("panel {title:?}"), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
            // label_values(metric, label) names a metric like a selector does.
            let query = query.strip_prefix("label_values(").and_then(|q| q.split_once(',')).map_or(query, |q| q.0);
            out.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    out
}

/// The metric names a PromQL expression selects: every identifier outside strings, label
/// matchers (`{...}`), ranges (`[...]`) and grouping lists (`by (...)`, `on (...)`, ...) that is
/// neither a keyword nor an aggregation, nor followed by `(` (a function). It errs on the side of
/// reporting: an identifier it cannot place counts as a name, and fails the check.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    const KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset", "inf", "nan", "atan2"];
    // Aggregations may be followed by `by (...)` instead of `(`.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let (mut names, mut i, mut braces, mut brackets) = (BTreeSet::new(), 0, 0_i32, 0_i32);
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' && c != '`' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '$' {
            // A number or a duration (`1e3`, `0.05`, `5m`), or a Grafana variable.
            i += 1;
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let lower = word.to_lowercase();
            if braces > 0
                || brackets > 0
                || KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
            {
                continue;
            }
            if GROUPING.contains(&lower.as_str()) {
                // Skip its list of label names, if any.
                if next == Some(&'(') {
                    i = chars[i..].iter().position(|&c| c == ')').map_or(chars.len(), |p| i + p + 1);
                }
                continue;
            }
            if next != Some(&'(') {
                names.insert(word);
            }
        } else {
            match c {
                '{' => braces += 1,
                '}' => braces -= 1,
                '[' => brackets += 1,
                ']' => brackets -= 1,
                _ => {}
            }
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_what_an_expression_selects() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(http_seconds_bucket{route!~"/a|/b",x="by(y)"}[$__rate_interval])))"#
        ),
        ["http_seconds_bucket"]
    );
    assert_eq!(
        names(
            r#"(max by (p) (label_replace(depth{queue=~".+\\.p[0-9]+"}, "p", "$1", "queue", "x")) > 0) unless on (p) (active == bool 1) offset 5m"#
        ),
        ["active", "depth"]
    );
    assert_eq!(names("time() - max(last_success) > 3600 and absent(typo_metric)"), ["last_success", "typo_metric"]);
    assert_eq!(names("sum(rate(a[5m])) / sum(rate(b[5m])) > 1e-3 or vector(0)"), ["a", "b"]);
}

/// The metric names in a Prometheus text exposition: each sample's (a histogram's `_bucket`,
/// `_sum` and `_count`, a summary's quantiles, `_sum` and `_count`).
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The real processes' metrics: the gateway (in process, as `ledgerflow gateway` builds it) and a
/// `ledgerflow worker` process, scraped after a funding and a transfer, so that what is recorded on
/// the way of a transfer exists. Every name the rules and the dashboard use must be among them,
/// or in [`EXTERNAL_METRICS`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_name_only_exported_metrics() {
    let app = spawn_app_with(0).await;
    let (worker, port) = app.spawn_worker_with_metrics("monitoring");
    // A dispatcher in this process: its metrics go to the recorder the gateway serves.
    let dispatching = tokio_util::sync::CancellationToken::new();
    let config = ledgerflow_dispatcher::DispatcherConfig::new("monitoring", Default::default());
    let dispatcher = tokio::spawn(ledgerflow_dispatcher::run(app.store.clone(), config, dispatching.clone()));
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 100).await;
    let (status, body) = app.transfer(&alice, &a, &b, json!(40), "monitoring-1").await;
    assert_eq!(status.as_u16(), 202, "{body}");
    let id = body["transaction"]["id"].as_str().expect("an id").to_owned();
    assert_eq!(app.wait_terminal(&alice.token, &id).await["status"], "COMPLETED");

    // Queue depths and partitions are sampled each second: wait until the worker has them all.
    let started = Instant::now();
    let worker_text = loop {
        let text = app.worker_metrics(port).await.unwrap_or_default();
        let names = exported_names(&text);
        if ["ledgerflow_queue_depth", "ledgerflow_partition_active", "ledgerflow_transfers_total"]
            .iter()
            .all(|n| names.contains(*n))
        {
            break text;
        }
        assert!(started.elapsed() < DEADLINE, "the worker never reported its metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The dispatcher's gauges are read from MongoDB as it starts: wait for them.
    let gateway_text = loop {
        let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if exported_names(&text).contains("ledgerflow_webhook_oldest_undelivered_seconds") {
            break text;
        }
        assert!(started.elapsed() < DEADLINE, "the dispatcher never reported its metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported: BTreeSet<String> =
        exported_names(&gateway_text).into_iter().chain(exported_names(&worker_text)).collect();
    assert!(exported.contains("ledgerflow_pending_oldest_age_seconds"), "{gateway_text}");

    let mut used: Vec<(String, String)> = Vec::new();
    for expr in rule_exprs(&read(RULES)) {
        used.extend(metric_names(&expr).into_iter().map(|n| (n, format!("{RULES}: {}", expr.trim()))));
    }
    for (place, expr) in dashboard_exprs(&read(DASHBOARD)) {
        used.extend(metric_names(&expr).into_iter().map(|n| (n, format!("{DASHBOARD}, {place}: {expr}"))));
    }
    assert!(used.len() > 30, "the name check found the metrics used: {used:?}");
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains(name) && !EXTERNAL_METRICS.contains(&name.as_str()))
        .map(|(name, place)| format!("{name}  (in {place})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics no LedgerFlow process exports:\n  {}\nexported: {exported:?}",
        unknown.join("\n  ")
    );
    drop(worker);
    dispatching.cancel();
    dispatcher.await.unwrap();
    app.teardown().await;
}
