//! The transfer pipeline end to end: HTTP → MongoDB (PENDING) → RabbitMQ → worker →
//! MongoDB (entries) → result queue.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ledgerflow_tests::serde_json::{self, Value, json};
use ledgerflow_tests::{DEADLINE, Pair, TestApp, spawn_app, spawn_app_configured, spawn_app_with};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_completes_with_one_debit_one_credit_and_balanced_books() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 10_000).await;

    let (status, body) = app.transfer(&alice, &a, &b, json!(2_500), "rent-2026-11").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let t = &body["transaction"];
    assert_eq!(t["status"], "PENDING");
    assert_eq!(t["amount"], 2_500);
    assert_eq!(t["currency"], "USD");
    let id = t["id"].as_str().unwrap();

    let done = app.wait_terminal(&alice.token, id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(done["completedAt"].is_string());
    // The receiver may see it too.
    assert_eq!(app.wait_terminal(&bob.token, id).await["status"], "COMPLETED");

    assert_eq!(app.balance(&alice.token, &a).await, 7_500);
    assert_eq!(app.balance(&bob.token, &b).await, 2_500);

    let alice_entries = app.entries(&alice.token, &a).await;
    let bob_entries = app.entries(&bob.token, &b).await;
    let of_transfer =
        |entries: &[Value]| -> Vec<Value> { entries.iter().filter(|e| e["transactionId"] == id).cloned().collect() };
    let debit = of_transfer(&alice_entries);
    let credit = of_transfer(&bob_entries);
    assert_eq!(debit.len(), 1, "{alice_entries:?}");
    assert_eq!(credit.len(), 1, "{bob_entries:?}");
    assert_eq!(debit[0]["type"], "DEBIT");
    assert_eq!(credit[0]["type"], "CREDIT");
    assert_eq!(debit[0]["amount"], 2_500);
    assert_eq!(credit[0]["amount"], 2_500);

    // Books balance: every entry, including the funding account's, sums to zero.
    let totals = app.store.entry_totals().await.unwrap();
    for (currency, sides) in totals {
        let (debits, credits) = sides.expect("exact totals");
        assert_eq!(debits, credits, "{currency}: debits {debits} != credits {credits}");
    }

    // The worker reported the outcome on the result queue.
    let results = app.drain_queue(&app.topology.results(), 2, 10).await;
    let result = results.iter().find(|r| r["transactionId"] == id).expect("result published");
    assert_eq!(result["status"], "COMPLETED");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncovered_transfer_fails_with_insufficient_funds_and_writes_no_entries() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 100).await;

    let id = &app.accept_transfer(&alice, &a, &b, 101, "too-much").await.transaction.id;
    let done = app.settled(&alice, id).await;
    assert_eq!((done.status.as_str(), done.failure_reason.as_deref()), ("FAILED", Some("INSUFFICIENT_FUNDS")));
    let id_parsed = id.parse().unwrap();
    assert!(app.store.entries_of_transaction(id_parsed).await.unwrap().is_empty());
    assert_eq!(app.balance(&alice.token, &a).await, 100);
    assert_eq!(app.balance(&bob.token, &b).await, 0);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_sent_twenty_times_at_once_makes_one_transaction_and_one_entry_pair() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;

    let sends = (0..20).map(|_| app.transfer(&alice, &a, &b, json!(300), "same-key"));
    let answers = futures::future::join_all(sends).await;
    let mut ids = std::collections::HashSet::new();
    let mut accepted = 0;
    for (status, body) in &answers {
        assert!(status == &StatusCode::ACCEPTED || status == &StatusCode::OK, "{status}: {body}");
        accepted += usize::from(status == &StatusCode::ACCEPTED);
        ids.insert(body["transaction"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(accepted, 1, "exactly one request creates the transaction");
    assert_eq!(ids.len(), 1, "all twenty see the same transaction");
    let id = ids.into_iter().next().unwrap();
    assert_eq!(app.wait_terminal(&alice.token, &id).await["status"], "COMPLETED");
    assert_eq!(app.store.entries_of_transaction(id.parse().unwrap()).await.unwrap().len(), 2);
    assert_eq!(app.balance(&alice.token, &a).await, 700);

    // A later repeat answers 200 with the transaction in its final state.
    let (status, body) = app.transfer(&alice, &a, &b, json!(300), "same-key").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["transaction"]["status"], "COMPLETED");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_draining_200_transfers_from_one_account_never_overdraw_it() {
    let app = spawn_app_with(2).await;
    let alice = app.register().await;
    let a = app.open_account(&alice).await;
    let mut receivers = Vec::new();
    for _ in 0..4 {
        let user = app.register().await;
        receivers.push(app.open_account(&user).await);
    }
    // Covers exactly 100 of the 200 transfers of 10.
    app.fund(&a, 1_000).await;

    let sends = (0..200).map(|i| {
        let to = receivers[i % receivers.len()].clone();
        let (app, alice, a) = (&app, &alice, &a);
        async move { app.accept_transfer(alice, a, &to, 10, &format!("drain-{i}")).await.transaction.id }
    });
    let ids = futures::future::join_all(sends).await;
    let mut completed = 0;
    let mut failed = 0;
    for id in &ids {
        let t = app.settled(&alice, id).await;
        match t.status.as_str() {
            "COMPLETED" => completed += 1,
            "FAILED" => {
                assert_eq!(t.failure_reason.as_deref(), Some("INSUFFICIENT_FUNDS"));
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let balance = app.balance(&alice.token, &a).await;
    assert!(balance >= 0, "overdrawn: {balance}");
    assert_eq!(balance, 1_000 - 10 * completed, "balance matches the completed transfers");
    assert_eq!(completed, 100, "exactly the covered half completes");
    assert_eq!(failed, 100);
    for (currency, sides) in app.store.entry_totals().await.unwrap() {
        let (debits, credits) = sides.expect("exact totals");
        assert_eq!(debits, credits, "{currency}");
    }
    app.teardown().await;
}

/// The partitions a worker process reports being active on, from its metrics endpoint.
async fn active_partitions(app: &TestApp, port: u16) -> BTreeSet<u16> {
    let text = app.worker_metrics(port).await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("ledgerflow_partition_active{partition=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter(|(_, v)| v.trim() == "1")
        .map(|(p, _)| p.parse().unwrap())
        .collect()
}

/// Waits until `n` workers are on the roster (so each consumes every partition).
async fn wait_for_workers(app: &TestApp, n: u32) {
    let by = Instant::now() + DEADLINE;
    ledgerflow_testkit::wait_for_workers(&app.settings.connections.amqp_uri, &app.topology, n, by).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_partitions_and_the_survivor_takes_them_all() {
    let mut app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000_000).await;
    app.stop_worker(0).await;
    let (first, first_port) = app.spawn_worker_with_metrics("first");
    wait_for_workers(&app, 1).await;
    let (second, second_port) = app.spawn_worker_with_metrics("second");
    wait_for_workers(&app, 2).await;

    // Rounds of 1-unit upstream transfers under 64 routing keys, which cover all four
    // partitions; a worker learns it is active on a partition from a delivery, and hands the
    // extras on as deliveries come.
    let mut sent = 0;
    let mut round = async |app: &TestApp| {
        for k in 0..64 {
            let cmd = app.upstream_command(&a, &b, 1, &format!("split-{sent}"));
            app.publish_raw(&format!("key-{k}"), &serde_json::to_vec(&cmd).unwrap()).await;
            sent += 1;
        }
        let start = Instant::now();
        while app.balance(&bob.token, &b).await < sent {
            assert!(start.elapsed() < DEADLINE, "only {} of {sent} transfers done", app.balance(&bob.token, &b).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    };
    let start = Instant::now();
    let (mine, theirs) = loop {
        round(&app).await;
        let (mine, theirs) = (active_partitions(&app, first_port).await, active_partitions(&app, second_port).await);
        if mine.len() == 2 && theirs.len() == 2 && mine.is_disjoint(&theirs) {
            break (mine, theirs);
        }
        assert!(start.elapsed() < DEADLINE, "no even split: first {mine:?}, second {theirs:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(mine.union(&theirs).count(), 4);

    // The second worker dies with whatever it held: the broker makes the first one active on
    // its partitions at once, and nothing is lost.
    drop(second);
    let start = Instant::now();
    loop {
        round(&app).await;
        if active_partitions(&app, first_port).await.len() == 4 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "the survivor did not take every partition");
    }
    let done = round(&app).await;
    assert_eq!(app.balance(&alice.token, &a).await, 1_000_000 - done);
    assert_eq!(app.balance(&bob.token, &b).await, done);
    app.assert_reconciles().await;
    drop(first);
    app.teardown().await;
}

/// Lingering never holds a transfer that arrives alone: with both lingers set to an hour,
/// sparse transfers still complete (a held one would miss `settled`'s deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_transfers_are_not_held_by_lingering() {
    let hour = Duration::from_secs(3600);
    let mut app = spawn_app_configured(0, |gateway| gateway.insert_linger = hour.into()).await;
    let mut config = app.worker_config("lingering-worker");
    config.batch_linger = hour;
    app.add_worker_with(app.store.clone(), config);
    let Pair { alice, a, b, .. } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    for i in 0..3 {
        let id = app.accept_transfer(&alice, &a, &b, 100, &format!("sparse-{i}")).await.transaction.id;
        assert_eq!(app.settled(&alice, &id).await.status, "COMPLETED");
    }
    assert_eq!(app.balance(&alice.token, &a).await, 700);
    app.teardown().await;
}
