//! The ledger proves itself: `ledgerflow reconcile` passes on honest books and names the
//! first broken entry when one is edited behind the application's back.

use ledgerflow_tests::processes::PROCESS_DEADLINE;
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{Pair, spawn_app};
use mongodb::bson::doc;

fn checks(report: &Value) -> Vec<String> {
    report["discrepancies"].as_array().unwrap().iter().map(|d| d["check"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_passes_on_honest_books_and_catches_an_edited_entry() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 10_000).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(app.accept_transfer(&alice, &a, &b, 100 + i, &format!("r{i}")).await.transaction.id);
    }
    ids.push(app.accept_transfer(&alice, &a, &b, 1_000_000, "too-much").await.transaction.id);
    for id in &ids {
        app.settled(&alice, id).await;
    }

    let (code, report) = app.reconcile(&[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["transactions"], 8);
    assert_eq!(report["entries"], 14);
    assert_eq!(report["totals"], json!([{"currency": "USD", "debits": 10_615, "credits": 10_615}]));
    // Text mode says the same.
    let (code, text) = app.run_cli(&["reconcile"]).await;
    assert_eq!(code, 0);
    assert!(text.contains("OK: every invariant holds"), "{text}");

    // Someone edits Bob's third entry in the database, making it 10_002.
    let entries = app.raw_db().await.collection::<mongodb::bson::Document>("entries");
    let third = entries.find_one(doc! { "accountId": &b, "seq": 3_i64 }).await.unwrap().unwrap();
    let tampered_id = third.get_str("_id").unwrap().to_owned();
    entries.update_one(doc! { "_id": &tampered_id }, doc! { "$set": { "amount": 10_002_i64 } }).await.unwrap();

    let (code, report) = app.reconcile(&[]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["ok"], false);
    let found = checks(&report);
    assert!(found.contains(&"debits_equal_credits".to_owned()), "{found:?}");
    assert!(found.contains(&"completed_entries".to_owned()), "{found:?}");
    assert!(found.contains(&"running_balance".to_owned()), "{found:?}");
    let chain: Vec<&Value> =
        report["discrepancies"].as_array().unwrap().iter().filter(|d| d["check"] == "hash_chain").collect();
    assert_eq!(chain.len(), 1, "only the first broken link is named: {chain:?}");
    assert!(chain[0]["subject"].as_str().unwrap().contains(&tampered_id), "{}", chain[0]);
    let (_, text) = app.run_cli(&["reconcile"]).await;
    assert!(text.contains("FAILED") && text.contains(&tampered_id), "{text}");

    // Recomputing the hash after the edit does not help: the next entry's prevHash still
    // points at the original.
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_stuck_pending_transactions_and_deleted_entries() {
    let mut app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    let done_id = app.accept_transfer(&alice, &a, &b, 10, "done").await.transaction.id;
    app.settled(&alice, &done_id).await;

    // With no worker, a new transfer stays PENDING.
    app.stop_worker(0).await;
    let pending_id = app.accept_transfer(&alice, &a, &b, 10, "stuck").await.transaction.id;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (code, report) = app.reconcile(&["--max-pending-age", "1s"]).await;
    assert_eq!(code, 1);
    assert_eq!(report["stuck_pending"], 1);
    assert_eq!(checks(&report), vec!["stuck_pending"]);
    assert!(report["discrepancies"][0]["subject"].as_str().unwrap().contains(&pending_id));
    let (code, _) = app.reconcile(&["--max-pending-age", "1h"]).await;
    assert_eq!(code, 0, "young PENDING work is not a discrepancy");

    // A PENDING transaction the republisher could not find (its `pending` note gone) is.
    let notes = app.raw_db().await.collection::<mongodb::bson::Document>("pending");
    let note = notes.find_one_and_delete(doc! { "_id": &pending_id }).await.unwrap().expect("it is noted");
    let (code, report) = app.reconcile(&["--max-pending-age", "1h"]).await;
    assert_eq!((code, checks(&report)), (1, vec!["pending_note".to_owned()]), "{report}");
    assert!(report["discrepancies"][0]["subject"].as_str().unwrap().contains(&pending_id));
    notes.insert_one(note).await.unwrap();
    // So is a note of a decided transaction, or of none at all.
    let decided = doc! { "_id": &done_id, "createdAt": mongodb::bson::DateTime::now(), "republished": 0_i64 };
    let unknown = doc! { "_id": "00000000-0000-7000-8000-000000000000", "createdAt": mongodb::bson::DateTime::now() };
    notes.insert_many([decided, unknown]).await.unwrap();
    let (code, report) = app.reconcile(&["--max-pending-age", "1h"]).await;
    assert_eq!((code, checks(&report)), (1, vec!["pending_note".to_owned(); 2]), "{report}");
    notes.delete_many(doc! { "_id": { "$ne": &pending_id } }).await.unwrap();

    // Deleting Alice's first entry (the funding credit) is caught: the books no longer
    // balance, her sequence has a hole, her running balance and her chain break.
    let raw = app.raw_db().await;
    raw.collection::<mongodb::bson::Document>("entries")
        .delete_one(doc! { "accountId": &a, "seq": 1_i64 })
        .await
        .unwrap();
    let (code, report) = app.reconcile(&["--max-pending-age", "1h"]).await;
    assert_eq!(code, 1);
    let found = checks(&report);
    for expected in ["debits_equal_credits", "completed_entries", "sequence", "running_balance", "hash_chain"] {
        assert!(found.contains(&expected.to_owned()), "{expected} in {found:?}");
    }
    app.teardown().await;
}

/// The API never closes an account that holds money; one closed around it is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_a_closed_account_that_holds_money() {
    let app = spawn_app().await;
    let Pair { a, b, .. } = app.alice_and_bob().await;
    app.fund(&a, 300).await;
    let raw = app.raw_db().await;
    let accounts = raw.collection::<mongodb::bson::Document>("accounts");
    for id in [&a, &b] {
        accounts.update_one(doc! { "_id": id }, doc! { "$set": { "status": "CLOSED" } }).await.unwrap();
    }
    let (code, report) = app.reconcile(&[]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(checks(&report), vec!["closed_with_balance"], "only a, which holds 300: {report}");
    assert_eq!(report["discrepancies"][0]["subject"], format!("account {a}"));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_list_suspend_reactivate_close_and_show() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 500).await;

    let (code, out) = app.run_cli(&["admin", "accounts", "list", "--owner", &alice.id]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&a) && out.contains("500") && !out.contains(&b), "{out}");
    assert!(out.contains("1 account(s)"), "{out}");

    let (code, out) = app.run_cli(&["admin", "accounts", "suspend", &b]).await;
    assert_eq!((code, out.trim().to_owned()), (0, format!("account {b} is now SUSPENDED")));
    let t = app.accept_transfer(&alice, &a, &b, 50, "to-suspended").await.transaction;
    let refused = app.settled(&alice, &t.id).await;
    assert_eq!(refused.failure_reason.as_deref(), Some("ACCOUNT_NOT_ACTIVE"));

    let (code, _) = app.run_cli(&["admin", "accounts", "reactivate", &b]).await;
    assert_eq!(code, 0);
    let id = app.accept_transfer(&alice, &a, &b, 50, "after-reactivation").await.transaction.id;
    assert_eq!(app.settled(&alice, &id).await.status, "COMPLETED");

    // b holds the 50 now: it cannot be closed, and a closed account is never reactivated.
    let refused = async |verb: &str| {
        let mut cmd = app.cli();
        cmd.args(["admin", "accounts", verb, b.as_str()]);
        let out = ledgerflow_tests::cli_output(cmd, PROCESS_DEADLINE).await;
        (out.status.code(), String::from_utf8_lossy(&out.stderr).trim_end().to_owned())
    };
    let held = format!(
        "Error: account {b} cannot become CLOSED: the account holds 50 (minor units of USD); move it out before closing the account"
    );
    assert_eq!(refused("close").await, (Some(1), held));
    let t = app.accept_transfer(&bob, &b, &a, 50, "empty-b").await.transaction;
    app.settled(&bob, &t.id).await;
    let (code, out) = app.run_cli(&["admin", "accounts", "close", &b]).await;
    assert_eq!((code, out.trim().to_owned()), (0, format!("account {b} is now CLOSED")));
    let final_ = format!("Error: account {b} cannot become ACTIVE: the account is CLOSED, which is final");
    assert_eq!(refused("reactivate").await, (Some(1), final_));

    let (code, out) = app.run_cli(&["admin", "transaction", &id]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("COMPLETED") && out.contains("DEBIT") && out.contains("CREDIT") && out.contains("2 entries"),
        "{out}"
    );
    let (code, _) = app.run_cli(&["admin", "transaction", &uuid::Uuid::now_v7().to_string()]).await;
    assert_ne!(code, 0, "an unknown transaction is an error");
    // An operator's mistake is one line on stderr, causes included, even with RUST_BACKTRACE
    // set (which asks for backtraces of panics, not of errors).
    let unknown = uuid::Uuid::now_v7().to_string();
    let cases = [
        ("not-an-id".to_owned(), "Error: not a transaction id: transactionId must be a UUID".to_owned()),
        (unknown.clone(), format!("Error: no transaction {unknown}")),
    ];
    for (arg, says) in &cases {
        let mut cmd = app.cli();
        cmd.args(["admin", "transaction", arg.as_str()]).env("RUST_BACKTRACE", "1");
        let out = ledgerflow_tests::cli_output(cmd, PROCESS_DEADLINE).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim_end(), says);
    }
    app.teardown().await;
}

/// A scheduled `reconcile` must report an outage, not wait for MongoDB forever as a service
/// does: it gives up after its patience (30 s) with exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_command_gives_up_on_an_unreachable_mongodb() {
    let mut settings = ledgerflow_tests::test_settings("test").one_shot();
    settings.connections.mongodb_uri = "mongodb://127.0.0.1:1/?replicaSet=rs0&serverSelectionTimeoutMS=500".into();
    let mut cmd = ledgerflow_tests::ledgerflow_command(&settings);
    cmd.arg("reconcile");
    // The patience and one last server-selection timeout, with room to spare.
    let out = ledgerflow_tests::cli_output(cmd, std::time::Duration::from_secs(90)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Error: MongoDB unreachable for "), "{stderr}");
    // The driver's reason once, not once per link of the error chain.
    let error = stderr.lines().find(|l| l.starts_with("Error: ")).unwrap_or_default();
    assert_eq!(error.matches("Server selection timeout").count(), 1, "{error}");
}

/// A gateway reads no worker settings: a worker variable it could not parse (in an
/// environment shared with workers, say) does not stop it, while a worker still refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_whatever_the_worker_variables_say() {
    let app = spawn_app().await;
    let invalid = [("LEDGERFLOW_WORKER_PREFETCH", "lots"), ("LEDGERFLOW_WORKER_MAX_ATTEMPTS", "many")];
    let mut settings = app.settings.gateway_only();
    let addr = ledgerflow_testkit::free_local_addr().unwrap();
    settings.gateway.as_mut().unwrap().http_addr = addr;
    let mut cmd = app.launcher().command(&settings, "gateway");
    cmd.envs(invalid);
    let mut gateway = app.launcher().spawn(cmd, "gateway-invalid-worker-env").unwrap();
    let client = ledgerflow_client::Client::new(format!("http://{addr}"));
    let start = std::time::Instant::now();
    while !client.ready().await {
        assert!(gateway.exited().is_none(), "the gateway exited\n{}", gateway.tail(20));
        assert!(start.elapsed() < PROCESS_DEADLINE, "the gateway was not ready in time\n{}", gateway.tail(20));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The same variables stop a worker, which reads them: they are invalid indeed.
    let mut cmd = app.launcher().command(&app.settings.worker_only(), "worker");
    cmd.envs(invalid);
    let out = ledgerflow_tests::cli_output(cmd, PROCESS_DEADLINE).await;
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    drop(gateway);
    app.teardown().await;
}

/// The bench's smoke run, so the load generator cannot rot: it must start its own gateway
/// and worker processes, push transfers through, and report every figure it promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_smoke_run_reports_its_figures() {
    let app = spawn_app().await;
    let samples = std::env::temp_dir().join(format!("ledgerflow-bench-samples-{}.csv", uuid::Uuid::new_v4()));
    let (code, out) = app
        .run_cli(&[
            "bench",
            "--samples",
            samples.to_str().expect("a UTF-8 temporary path"),
            "--accounts",
            "10",
            "--transfers",
            "50",
            "--workers",
            "1",
            "--raw",
            "--rate",
            "200",
            "--json",
        ])
        .await;
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench printed no JSON ({e}): {out}"));
    assert_eq!(report["accepted"], 50, "{report}");
    assert_eq!(report["completed"].as_u64().unwrap() + report["failed"].as_u64().unwrap(), 50, "{report}");
    assert_eq!(report["unfinished"], 0, "{report}");
    assert_eq!(report["rate"], 200, "{report}");
    // Paced at 200/s, 50 transfers cannot be accepted faster than that.
    assert!(report["accepted_per_s"].as_f64().is_some_and(|r| r <= 250.0), "{report}");
    for figure in ["completed_per_s", "accepted_per_s", "raw_per_s", "ratio"] {
        assert!(report[figure].as_f64().is_some_and(|v| v > 0.0), "{figure} in {report}");
    }
    for phase in ["accept", "complete", "decide", "report"] {
        for p in ["p50", "p95", "p99", "max"] {
            assert!(report["latency_ms"][phase][p].is_number(), "latency_ms.{phase}.{p} in {report}");
        }
    }
    // The two stages split each completed transfer's way at the worker's decision, which is
    // read to the millisecond: neither can take longer than the whole way.
    let max = |phase: &str| report["latency_ms"][phase]["max"].as_f64().expect("a max");
    assert!(max("decide") <= max("complete") && max("report") <= max("complete") + 1.0, "{report}");
    assert!(report["rss_mb"]["gateway"].as_f64().is_some_and(|mb| mb > 0.0), "{report}");
    // CPU during the load: the machine's (every process) and each started process's own.
    assert!(report["cpu_s"]["machine"].as_f64().is_some_and(|s| s > 0.0), "{report}");
    for process in ["gateway", "worker-1", "bench"] {
        assert!(report["cpu_s"][process].as_f64().is_some_and(|s| s >= 0.0), "{process} in {report}");
    }
    // The worker's own counters cover the load: every transfer went through some batch.
    let batching = &report["batching"];
    assert!(batching["batches"].as_u64().is_some_and(|b| b >= 1), "{report}");
    assert!(batching["commands"].as_u64().is_some_and(|c| c >= 50), "{report}");
    assert!(batching["conflict_retries"].is_u64() && batching["splits"].is_u64(), "{report}");
    // The run's own ledger, checked after the load: setup fundings and the 50 transfers, each
    // completed one with its two entries, and every invariant holding.
    let ledger = &report["ledger"];
    assert_eq!(ledger["ok"], true, "{report}");
    assert_eq!(ledger["discrepancies"], 0, "{report}");
    assert!(ledger["transactions"].as_u64().is_some_and(|t| t >= 50), "{report}");
    let completed = report["completed"].as_u64().expect("a count");
    assert!(ledger["entries"].as_u64().is_some_and(|e| e >= 2 * completed), "{report}");
    // One line per transfer, each with its timings and outcome.
    let csv = std::fs::read_to_string(&samples).expect("the samples file");
    let _ = std::fs::remove_file(&samples);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("sent_ms,accept_ms,decided_ms,result_ms,status"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 50, "{csv}");
    for row in &rows {
        assert!(matches!(row[4], "COMPLETED" | "FAILED"), "{csv}");
        let timed: &[usize] = if row[4] == "COMPLETED" { &[0, 1, 2, 3] } else { &[0, 1, 3] };
        for &cell in timed {
            assert!(row[cell].parse::<f64>().is_ok_and(|ms| ms >= 0.0), "{csv}");
        }
    }
    app.teardown().await;
}

/// `--rate 50%` measures the maximum with an unpaced load first, then paces the timed load
/// at half of it, in one run: the "p99 at half the maximum" is one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_paces_at_a_share_of_the_maximum_it_measured_first() {
    let app = spawn_app().await;
    let args = ["bench", "--accounts", "10", "--transfers", "40", "--workers", "1", "--rate", "50%", "--json"];
    let (code, out) = app.run_cli(&args).await;
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench printed no JSON ({e}): {out}"));
    let maximum = report["maximum"]["completed_per_s"].as_f64().expect("the measured maximum");
    assert!(maximum > 0.0, "{report}");
    assert_eq!(report["maximum"]["percent"], 50, "{report}");
    let rate = report["rate"].as_u64().expect("the pace it chose");
    assert_eq!(rate, ((maximum / 2.0).round() as u64).max(1), "{report}");
    // Both loads' transfers went through (the keys of one do not replay the other's), and the
    // timed one kept to its pace.
    assert_eq!(report["accepted"], 40, "{report}");
    assert_eq!(report["completed"].as_u64().unwrap() + report["failed"].as_u64().unwrap(), 40, "{report}");
    assert_eq!(report["unfinished"], 0, "{report}");
    assert!(report["accepted_per_s"].as_f64().is_some_and(|r| r <= rate as f64 * 1.25 + 1.0), "{report}");
    let (code, out) = app.run_cli(&["bench", "--rate", "0%", "--transfers", "1"]).await;
    assert_ne!(code, 0, "0% is no pace: {out}");
    app.teardown().await;
}

/// `--holds` runs hold-then-post pairs after the transfers, on the same processes, and reports
/// their rate and what a pair costs against a transfer; over HTTP and, with `--direct`, as
/// upstream HOLD and POST_HOLD commands. The run's ledger, reservations included, must reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_hold_then_post_pairs_beside_the_transfers() {
    let app = spawn_app().await;
    for mode in [None, Some("--direct")] {
        let mut args = vec!["bench", "--holds", "--accounts", "10", "--transfers", "30", "--workers", "1", "--json"];
        args.extend(mode);
        let via = mode.unwrap_or("HTTP");
        let (code, out) = app.run_cli(&args).await;
        assert_eq!(code, 0, "{via}: {out}");
        let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bench printed no JSON ({e}): {out}"));
        assert_eq!(report["completed"], 30, "{via}: {report}");
        let holds = &report["holds"];
        for count in ["holds_accepted", "held", "posts_accepted", "completed"] {
            assert_eq!(holds[count], 30, "{via}: holds.{count} in {report}");
        }
        for count in ["failed", "rejected", "unfinished"] {
            assert_eq!(holds[count], 0, "{via}: holds.{count} in {report}");
        }
        assert!(holds["completed_per_s"].as_f64().is_some_and(|r| r > 0.0), "{via}: {report}");
        for stage in ["hold_accept", "held", "post_accept", "pair"] {
            assert!(holds["latency_ms"][stage]["p99"].is_number(), "{via}: holds.latency_ms.{stage} in {report}");
        }
        // A pair ends after its hold was heard HELD.
        let max = |stage: &str| holds["latency_ms"][stage]["max"].as_f64().expect("a max");
        assert!(max("held") <= max("pair"), "{via}: {report}");
        for ratio in ["rate", "cpu", "latency_p50"] {
            assert!(holds["ratio"][ratio].as_f64().is_some_and(|r| r > 0.0), "{via}: holds.ratio.{ratio} in {report}");
        }
        assert_eq!(holds["ratio"]["target"], 2.5, "{via}: {report}");
        // The transfers again after the pairs, which the ratios count with the first.
        let again = &holds["transfers_after"];
        assert_eq!(again["completed"], 30, "{via}: {report}");
        assert!(again["completed_per_s"].as_f64().is_some_and(|r| r > 0.0), "{via}: {report}");
        assert!(again["cpu_s"]["machine"].as_f64().is_some_and(|s| s > 0.0), "{via}: {report}");
        // Fundings, both loads of transfers, and a hold and a post per pair, every one in order.
        let ledger = &report["ledger"];
        assert_eq!(ledger["ok"], true, "{via}: {report}");
        assert!(ledger["transactions"].as_u64().is_some_and(|t| t >= 10 + 2 * 30 + 2 * 30), "{via}: {report}");
    }
    app.teardown().await;
}

/// A process's state letter and parent pid, from `/proc/<pid>/stat` (`pid (comm) state ppid …`;
/// comm may hold spaces, so the fields are read after its `)`). `None` once it is gone.
fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_owned();
    Some((state, fields.next()?.parse().ok()?))
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_stat(p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// Whether `pid` still runs (a zombie or a vanished process does not).
fn running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != "Z")
}

/// A bench stopped with SIGTERM (a CI job's timeout, a supervisor) stops the gateway and
/// workers it started on its way out instead of leaving them running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_bench_stops_the_processes_it_started() {
    let app = spawn_app().await;
    // Killed when dropped, should an assertion below fail first.
    let mut bench = {
        let mut cmd = app.cli();
        cmd.args(["bench", "--accounts", "10", "--transfers", "100000", "--rate", "20", "--workers", "1"]);
        app.launcher().spawn(cmd, "bench").unwrap()
    };
    let pid = bench.pid();
    let deadline = std::time::Instant::now() + PROCESS_DEADLINE;
    // The gateway and one worker.
    let started = loop {
        let children = children_of(pid);
        if children.len() >= 2 {
            break children;
        }
        assert!(std::time::Instant::now() < deadline, "the bench started no processes");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    ledgerflow_tests::processes::run_bounded_async("kill", &["-TERM", &pid.to_string()], PROCESS_DEADLINE)
        .await
        .expect("kill -TERM the bench");
    let exited = loop {
        if let Some(status) = bench.exited() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the bench did not exit after SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!exited.success(), "an interrupted bench reports failure: {exited}");
    let left: Vec<u32> = started.into_iter().filter(|&p| running(p)).collect();
    assert!(left.is_empty(), "processes left running after the bench: {left:?}");
    app.teardown().await;
}
