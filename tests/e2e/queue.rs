//! Queue-level behaviour: upstream publishers, redelivery, dead letters, lost publishes,
//! lost connections and graceful shutdown, against the real broker and database.

use std::time::{Duration, Instant};

use ledgerflow_domain::TransactionStatus;
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{
    DEADLINE, GATEWAY_BROKER_USER, Pair, assert_error, close_broker_connections, ready_commands, schema, spawn_app,
    spawn_app_configured,
};
use reqwest::StatusCode;

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_command_completes_once_however_often_it_is_published() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 5_000).await;

    let cmd = app.upstream_command(&a, &b, 1_250, "payroll-42");
    let command_schema = jsonschema::validator_for(&schema("transfer-command.v1.schema.json")).unwrap();
    assert!(command_schema.is_valid(&cmd), "the test's command matches the published schema");
    // Any routing key is delivered; the same command three times moves money once.
    for key in [a.as_str(), "whatever", ""] {
        app.publish_raw(key, &bytes(&cmd)).await;
    }
    let t = app.wait_upstream("payroll-42").await;
    assert_eq!(t.status, TransactionStatus::Completed);
    assert_eq!(t.initiator.to_string(), "service:test-upstream");
    let results = app.drain_queue(&app.topology.results(), 4, 10).await;
    let result_schema = jsonschema::validator_for(&schema("transfer-result.v1.schema.json")).unwrap();
    let mine: Vec<&Value> = results.iter().filter(|r| r["idempotencyKey"] == "payroll-42").collect();
    assert_eq!(mine.len(), 3, "one result per delivery: {results:?}");
    for r in results.iter() {
        assert!(result_schema.is_valid(r), "result matches its schema: {r}");
    }
    assert!(mine.iter().all(|r| r["status"] == "COMPLETED" && r["transactionId"] == t.id.to_string()));
    assert_eq!(app.store.entries_of_transaction(t.id).await.unwrap().len(), 2);
    assert_eq!(app.balance(&alice.token, &a).await, 3_750);
    assert_eq!(app.balance(&bob.token, &b).await, 1_250);
    // The transaction is visible over HTTP to the accounts' owners.
    let seen = app.settled(&bob, &t.id.to_string()).await;
    assert_eq!(seen.status, "COMPLETED");

    // Same key, different body: refused as a reused key (not reported as if the transfer
    // under it had failed) and dead-lettered, the original untouched.
    app.publish_raw(&a, &bytes(&app.upstream_command(&a, &b, 9, "payroll-42"))).await;
    let dead = app.dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    let results = app.drain_queue(&app.topology.results(), 1, 10).await;
    assert_eq!(results.len(), 1, "{results:?}");
    let refused = &results[0];
    assert!(result_schema.is_valid(refused), "{refused}");
    assert_eq!((&refused["status"], &refused["failureReason"]), (&json!("FAILED"), &json!("IDEMPOTENCY_KEY_REUSED")));
    assert_eq!((&refused["idempotencyKey"], &refused["transactionId"]), (&json!("payroll-42"), &Value::Null));
    assert_eq!(app.balance(&alice.token, &a).await, 3_750);
    assert_eq!(app.store.entries_of_transaction(t.id).await.unwrap().len(), 2);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_messages_are_dead_lettered_while_the_worker_keeps_serving() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    let eur = app.must("open an EUR account", app.as_user(&bob).open_account(Some("EUR")).await).id;
    let eur = eur.as_str();

    let good = app.upstream_command(&a, &b, 10, "good");
    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c["idempotencyKey"] = json!(format!("bad-{field}"));
        bytes(&c)
    };
    let mut impersonating = good.clone();
    impersonating["initiator"] = json!(alice.id);
    let hostile: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        b"".to_vec(),
        b"[1,2,3]".to_vec(),
        vec![0xff, 0x00, 0xfe],
        with("amount", json!(-100)),
        with("amount", json!(0)),
        with("amount", json!(12.5)),
        with("amount", json!("10")),
        with("amount", json!(10_000_000_000_000_000_i64)),
        with("version", json!(99)),
        with("toAccount", json!({"$ne": null})),
        with("fromAccount", json!(null)),
        with("currency", json!("DOGE")),
        bytes(&impersonating),
        // The amount twice: 1 to one parser, 10 to another, so neither.
        String::from_utf8(with("amount", json!(10))).unwrap().replacen('{', r#"{"amount":1,"#, 1).into_bytes(),
        format!("{{\"version\":1,\"pad\":\"{}\"}}", "x".repeat(1_000_000)).into_bytes(),
    ];
    for body in &hostile {
        app.publish_raw(&a, body).await;
    }
    // A well-formed command naming an unknown account is not malformed: it FAILs normally.
    app.publish_raw(&a, &bytes(&app.upstream_command(&a, &uuid::Uuid::now_v7().to_string(), 10, "ghost"))).await;
    // Nor is one between accounts of different currencies (the gateway refuses those at once).
    app.publish_raw(&a, &bytes(&app.upstream_command(&a, eur, 10, "fx"))).await;
    app.publish_raw(&a, &bytes(&good)).await;

    assert_eq!(app.wait_upstream("good").await.status, TransactionStatus::Completed);
    let ghost = app.wait_upstream("ghost").await;
    assert_eq!(ghost.failure_reason, Some(ledgerflow_domain::FailureReason::AccountNotFound));
    let fx = app.wait_upstream("fx").await;
    assert_eq!(fx.failure_reason, Some(ledgerflow_domain::FailureReason::CurrencyMismatch));
    let dead = app.dead_letters(hostile.len()).await;
    assert_eq!(dead.len(), hostile.len(), "every hostile message, and only those, is dead-lettered");
    let results = app.drain_queue(&app.topology.results(), hostile.len() + 4, 100).await;
    let invalid = results.iter().filter(|r| r["failureReason"] == "INVALID_COMMAND").count();
    assert_eq!(invalid, hostile.len(), "each one got a FAILED INVALID_COMMAND result");
    // The impersonation did not create a transaction in Alice's name.
    let listed = app.must("list transactions", app.as_user(&alice).transactions().await);
    assert!(listed.transactions.iter().all(|t| t.idempotency_key != "good" || t.amount == 10), "{listed:?}");
    assert_eq!(app.balance(&alice.token, &a).await, 990);

    // And the worker is still serving.
    let t = app.accept_transfer(&alice, &a, &b, 5, "after-the-flood").await.transaction;
    assert_eq!(app.settled(&alice, &t.id).await.status, "COMPLETED");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_or_tampered_gateway_command_never_moves_money_twice() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    let id = app.accept_transfer(&alice, &a, &b, 400, "once").await.transaction.id;
    app.settled(&alice, &id).await;

    let record = app.store.find_transaction(id.parse().unwrap()).await.unwrap().unwrap();
    let original = record.to_command().to_json();
    // Redelivered five times: still one pair of entries.
    for _ in 0..5 {
        app.publish_raw_as(GATEWAY_BROKER_USER, &a, &original).await;
    }
    // A tampered copy (same id, bigger amount) and one with a forged id are refused.
    let mut tampered: Value = serde_json::from_slice(&original).unwrap();
    tampered["amount"] = json!(900);
    app.publish_raw_as(GATEWAY_BROKER_USER, &a, &bytes(&tampered)).await;
    tampered["transactionId"] = json!(uuid::Uuid::now_v7());
    app.publish_raw_as(GATEWAY_BROKER_USER, &a, &bytes(&tampered)).await;
    assert_eq!(app.dead_letters(2).await.len(), 2);
    let results = app.drain_queue(&app.topology.results(), 9, 20).await;
    assert_eq!(results.iter().filter(|r| r["transactionId"] == id && r["status"] == "COMPLETED").count(), 6);
    assert_eq!(app.store.entries_of_transaction(record.id).await.unwrap().len(), 2);
    assert_eq!(app.balance(&alice.token, &a).await, 600);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_publish_failed_answers_503_and_is_republished_later() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;

    // A gateway whose broker is unreachable records the transfer but cannot publish it.
    let broken = app.extra_gateway("amqp://guest:guest@127.0.0.1:1/%2f").await;
    let body = json!({"fromAccount": a, "toAccount": b, "amount": 250, "idempotencyKey": "offline"});
    let resp =
        app.http.post(format!("{broken}/transactions")).bearer_auth(&alice.token).json(&body).send().await.unwrap();
    let got = (resp.status(), resp.json::<Value>().await.unwrap());
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "BROKER_UNAVAILABLE");
    let id = got.1["error"]["transactionId"].as_str().unwrap().to_owned();
    let resp = app.http.get(format!("{broken}/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The healthy gateway's republisher picks it up; the worker completes it.
    let done = app.settled(&alice, &id).await;
    assert_eq!(done.status, "COMPLETED", "{done:?}");
    // Retrying the request with the same key now just returns it.
    let (status, again) = app.transfer(&alice, &a, &b, json!(250), "offline").await;
    assert_eq!((status, again["transaction"]["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    assert_eq!(app.balance(&alice.token, &a).await, 750);
    app.teardown().await;
}

/// Older databases found PENDING transfers and HELD holds through indexes on `status` (and,
/// before that, on `(status, publishedAt, createdAt)`). Starting up notes them where this
/// version finds them (`pending`, `heldUntil`) before those indexes go, so the republisher
/// still sends the one and the expiry sweep still expires the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_keeps_its_pending_transfers_and_expiring_holds_findable() {
    use ledgerflow_client::Transfer;
    use mongodb::bson::{Document, doc};
    use mongodb::options::IndexOptions;
    let mut app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    let user = app.as_user(&alice);
    let transfer = Transfer { from: &a, to: &b, amount: 100, idempotency_key: "older-hold", description: None };
    let held = user.hold(&transfer, 4).await.unwrap().transaction;
    assert_eq!(user.wait(&held.id, 30).await.unwrap().status, "HELD");
    app.stop_worker(0).await;
    let pending = app.accept_transfer(&alice, &a, &b, 5, "older-pending").await.transaction.id;
    // Recorded during the rolling upgrade by a gateway of this version: noted already.
    let noted = app.accept_transfer(&alice, &a, &b, 6, "noted-pending").await.transaction.id;

    // What an older version left: no `pending` notes, no `heldUntil`, its indexes on `status`.
    let db = app.raw_db().await;
    let transactions = db.collection::<Document>("transactions");
    db.collection::<Document>("pending").delete_many(doc! { "_id": { "$ne": &noted } }).await.unwrap();
    transactions.drop_index("heldUntil").await.unwrap();
    transactions.update_many(doc! {}, doc! { "$unset": { "heldUntil": "" } }).await.unwrap();
    let old = |keys, options| mongodb::IndexModel::builder().keys(keys).options(options).build();
    let held_only = IndexOptions::builder()
        .name("held_expiresAt".to_owned())
        .partial_filter_expression(doc! { "status": "HELD" })
        .build();
    transactions
        .create_indexes([
            old(doc! { "status": 1, "publishedAt": 1, "createdAt": 1 }, None),
            old(doc! { "status": 1, "createdAt": 1 }, None),
            old(doc! { "expiresAt": 1 }, Some(held_only)),
        ])
        .await
        .unwrap();
    let store = app.store.clone();
    let stale_ids = || async {
        let stale = store.stale_pending(Duration::ZERO, 5, 10).await.unwrap();
        let mut ids: Vec<String> = stale.iter().map(|t| t.id.to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(stale_ids().await, std::slice::from_ref(&noted), "only the noted one is found");

    app.store.ensure_indexes().await.unwrap();
    let names = transactions.list_index_names().await.unwrap();
    assert!(!names.iter().any(|n| n.starts_with("status_") || n == "held_expiresAt"), "{names:?}");
    assert!(names.contains(&"heldUntil".to_owned()), "{names:?}");
    let mut both = [pending.clone(), noted.clone()];
    both.sort();
    assert_eq!(stale_ids().await, both, "the PENDING transfers are outstanding again, the noted one once");
    let hold = transactions.find_one(doc! { "_id": &held.id }).await.unwrap().unwrap();
    assert_eq!(hold.get_datetime("heldUntil"), hold.get_datetime("expiresAt"));
    // Without the old indexes, starting up again is no error and changes nothing.
    app.store.ensure_indexes().await.unwrap();

    // A worker decides the transfers, which are then outstanding no more; the sweep expires
    // the hold.
    app.add_worker();
    for id in [&pending, &noted] {
        assert_eq!(app.settled(&alice, id).await.status, "COMPLETED");
    }
    assert!(stale_ids().await.is_empty());
    let start = Instant::now();
    while user.transaction(&held.id).await.unwrap().status == "HELD" {
        assert!(start.elapsed() < DEADLINE, "the hold never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(user.transaction(&held.id).await.unwrap().status, "EXPIRED");
    app.assert_reconciles().await;
    app.teardown().await;
}

/// Inside a transaction MongoDB 6.0 checks every index of a collection for readiness on each
/// update that changes an indexed field, so a decision, which updates every PENDING record it
/// decides, must change none: no index of `transactions` may name, in its keys or its partial
/// filter, a field a decision writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_index_of_transactions_names_a_field_a_decision_writes() {
    use mongodb::bson::Document;
    let app = spawn_app().await;
    let indexes: Vec<mongodb::IndexModel> = {
        use futures::TryStreamExt;
        let transactions = app.raw_db().await.collection::<Document>("transactions");
        transactions.list_indexes().await.unwrap().try_collect().await.unwrap()
    };
    assert!(indexes.len() >= 9, "{indexes:?}");
    let decided = ["status", "failureReason", "completedAt", "failedLeg", "reversedBy"];
    for index in &indexes {
        let filter = index.options.as_ref().and_then(|o| o.partial_filter_expression.clone()).unwrap_or_default();
        let named: Vec<&str> = index.keys.keys().chain(filter.keys()).map(String::as_str).collect();
        assert!(!named.iter().any(|field| decided.contains(field)), "{:?} names {named:?}", index.options);
    }
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_republisher_waits_for_an_idle_queue_and_gives_up_after_five_tries() {
    let mut app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    app.stop_worker(0).await;
    let id = app.accept_transfer(&alice, &a, &b, 5, "never-processed").await.transaction.id;

    // Its command waits in the queue, well past the republish age (500 ms): not republished,
    // since a backlog means the command may simply not have been reached yet.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(ready_commands(&app.topology).await, 1, "the original command only");
    assert_eq!(app.drain_commands(1, 1).await.len(), 1);
    // With the queue empty, the still-PENDING transfer is sent again, up to five times; then
    // it is left for reconcile and the operator.
    let mut sent_again = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        sent_again += app.drain_commands(0, 10).await.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent_again, 5, "republished five times, then left alone");
    assert_eq!(app.stored_status(&id).await, "PENDING");
    let (code, report) = app.reconcile(&["--max-pending-age", "1s"]).await;
    assert_eq!(code, 1, "reconcile reports the stuck transfer: {report}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_its_broker_connection_being_closed() {
    let mut app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    // Replace the default worker with one whose connection name we know.
    app.stop_worker(0).await;
    let name = format!("conn-loss-{}", uuid::Uuid::new_v4().simple());
    let index = app.add_named_worker(&name);
    let start = Instant::now();
    while close_broker_connections(&name) == 0 {
        assert!(start.elapsed() < DEADLINE, "worker never connected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t = app.accept_transfer(&alice, &a, &b, 10, "after-loss").await.transaction;
    assert_eq!(app.settled(&alice, &t.id).await.status, "COMPLETED");
    app.stop_worker(index).await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_process_cleanly_and_loses_nothing() {
    let mut app = spawn_app().await;
    app.stop_worker(0).await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    // Fund directly with an upstream INITIAL_FUNDS command, processed by the real process.
    let mut worker = app.spawn_worker_process("sigterm-test");
    let mut fund = app.upstream_command(&a, &b, 100_000, "fund");
    fund["kind"] = json!("INITIAL_FUNDS");
    fund["fromAccount"] = Value::Null;
    fund["toAccount"] = json!(a);
    app.publish_raw(&a, &bytes(&fund)).await;
    assert_eq!(app.wait_upstream("fund").await.status, TransactionStatus::Completed);

    for i in 0..150 {
        app.publish_raw(&a, &bytes(&app.upstream_command(&a, &b, 10, &format!("t{i}")))).await;
    }
    // Stop it while it is working.
    let start = Instant::now();
    while app.balance(&bob.token, &b).await == 0 {
        assert!(start.elapsed() < DEADLINE, "the worker process never started working");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = worker.process.terminate(DEADLINE).await.unwrap().expect("the worker exits after SIGTERM");
    assert!(status.success(), "clean exit: {status}");

    // Whatever it had not finished is still queued; another worker finishes it.
    app.add_worker();
    for i in 0..150 {
        let t = app.wait_upstream(&format!("t{i}")).await;
        assert_eq!(t.status, TransactionStatus::Completed);
        assert_eq!(app.store.entries_of_transaction(t.id).await.unwrap().len(), 2);
    }
    assert_eq!(app.balance(&alice.token, &a).await, 100_000 - 1_500);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_keeps_failing_transiently_is_retried_then_dead_lettered_and_can_be_replayed() {
    let mut app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;

    // A worker whose database is unreachable: every attempt fails transiently.
    app.stop_worker(0).await;
    let unreachable = ledgerflow_store::Store::connect(
        "mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=200&connectTimeoutMS=200",
        "nowhere",
    )
    .await
    .unwrap();
    let broken = app.add_worker_with(unreachable, app.worker_config("db-down"));
    let gateway_id = app.accept_transfer(&alice, &a, &b, 25, "via-gateway").await.transaction.id;
    app.publish_raw(&a, &bytes(&app.upstream_command(&a, &b, 75, "doomed"))).await;

    // After max_attempts (3) tries through the retry queue both are dead-lettered. The
    // database being down, nothing could be marked: the recorded one stays PENDING, which
    // reconcile reports as stuck, and no result claims an outcome that was not decided.
    let start = Instant::now();
    let (code, listed) = loop {
        let (code, listed) = app.run_cli(&["admin", "dlq", "list"]).await;
        if listed.starts_with("2 dead-lettered") || start.elapsed() > DEADLINE {
            break (code, listed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, 0, "{listed}");
    assert!(listed.contains("key=doomed") && listed.contains("key=via-gateway"), "{listed}");
    assert_eq!(
        listed.matches("why=ATTEMPTS_EXHAUSTED (transient failures outlasted 3 attempts)").count(),
        2,
        "{listed}"
    );
    let results = app.drain_queue(&app.topology.results(), 0, 10).await;
    assert!(
        results.iter().all(|r| r["idempotencyKey"] != "doomed" && r["idempotencyKey"] != "via-gateway"),
        "{results:?}"
    );
    assert_eq!(app.stored_status(&gateway_id).await, "PENDING");
    let (code, report) = app.reconcile(&["--max-pending-age", "0s"]).await;
    assert_eq!((code, report["stuck_pending"].clone()), (1, json!(1)), "{report}");

    // Once the database is back (a healthy worker), replaying completes both, once each.
    app.stop_worker(broken).await;
    app.add_worker();
    // Two at least: the gateway's republisher may have re-sent the PENDING one meanwhile, to
    // be given up again. Replaying copies is harmless; the balances below show each moved once.
    let (code, out) = app.run_cli(&["admin", "dlq", "replay"]).await;
    let replayed: usize =
        out.trim().strip_prefix("replayed ").and_then(|r| r.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(code == 0 && replayed >= 2 && out.trim().ends_with(&app.topology.transfers()), "{out}");
    assert_eq!(app.wait_upstream("doomed").await.status, TransactionStatus::Completed);
    assert_eq!(app.settled(&alice, &gateway_id).await.status, "COMPLETED");
    assert_eq!(app.balance(&bob.token, &b).await, 100);
    let (_, listed) = app.run_cli(&["admin", "dlq", "list"]).await;
    assert!(listed.starts_with("0 dead-lettered"), "{listed}");
    let (code, report) = app.reconcile(&["--max-pending-age", "0s"]).await;
    assert_eq!(code, 0, "{report}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_conflicts_past_every_retry_is_failed_with_processing_failed() {
    let mut app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;

    // Someone else's open MongoDB transaction holds a write on Alice's account document, so
    // every posting from it conflicts until that transaction ends.
    let blocker = app.lock_account(&a).await;

    app.stop_worker(0).await;
    let impatient = app.store.clone().with_conflict_retry_budget(Duration::from_millis(300));
    app.add_worker_with(impatient, app.worker_config("impatient"));
    let id = app.accept_transfer(&alice, &a, &b, 100, "blocked").await.transaction.id;

    // In-process retries, then three tries through the retry queue, then given up.
    let failed = app.settled(&alice, &id).await;
    assert_eq!((failed.status.as_str(), failed.failure_reason.as_deref()), ("FAILED", Some("PROCESSING_FAILED")));
    let results = app.drain_queue(&app.topology.results(), 2, 10).await;
    assert!(
        results.iter().any(|r| r["transactionId"] == id && r["failureReason"] == "PROCESSING_FAILED"),
        "{results:?}"
    );
    assert_eq!(app.dead_letters(1).await.len(), 1);
    blocker.release().await;

    assert!(app.store.entries_of_transaction(id.parse().unwrap()).await.unwrap().is_empty());
    assert_eq!(app.balance(&alice.token, &a).await, 1_000);
    app.assert_reconciles().await;
    app.teardown().await;
}

/// A dead letter the worker cannot publish must not be handed to the broker's own
/// dead-lettering, which a quorum queue does at most once: with nowhere to go then either, the
/// command would vanish. Here the dead-letter queue is unbound, so the worker's confirmed,
/// mandatory copy comes back unroutable; the command goes back to its partition and is decided
/// again every second, and once the queue is bound again its dead letter arrives, reason and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_published_waits_in_its_partition() {
    use ledgerflow_messaging::lapin::options::QueueBindOptions;
    use ledgerflow_messaging::lapin::types::FieldTable;

    let mut app = spawn_app().await;
    // A worker process, whose metrics say how each delivery ended.
    app.stop_worker(0).await;
    let (worker, port) = app.spawn_worker_with_metrics("dead-letter-requeue");
    // Consuming, so done declaring the topology: its declare would bind the queue again.
    let start = Instant::now();
    while !app.worker_metrics(port).await.is_some_and(|text| text.contains("ledgerflow_partition_active")) {
        assert!(start.elapsed() < DEADLINE, "the worker process never started consuming");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = app.topology.dead_letters();
    let ch = app.channel().await;
    ch.queue_unbind(dead.as_str().into(), dead.as_str().into(), "".into(), FieldTable::default()).await.unwrap();
    app.publish_raw("nobody", b"not json at all").await;

    // Each decision reports FAILED INVALID_COMMAND before it tries the dead letter: a second
    // result means the command came back to be decided again.
    let results = app.drain_queue(&app.topology.results(), 2, 10).await;
    assert!(results.len() >= 2, "decided once, then gone: {results:?}");
    assert!(results.iter().all(|r| r["failureReason"] == "INVALID_COMMAND"), "{results:?}");
    assert_eq!(app.ready_in(&dead).await, 0);

    let bind = QueueBindOptions::default();
    ch.queue_bind(dead.as_str().into(), dead.as_str().into(), "".into(), bind, FieldTable::default()).await.unwrap();
    let start = Instant::now();
    let listed = loop {
        let (code, listed) = app.run_cli(&["admin", "dlq", "list"]).await;
        assert_eq!(code, 0, "{listed}");
        if !listed.starts_with("0 dead-lettered") || start.elapsed() > DEADLINE {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(listed.starts_with("1 dead-lettered"), "{listed}");
    assert!(listed.contains("why=INVALID_COMMAND"), "{listed}");
    assert_eq!(ready_commands(&app.topology).await, 0);
    // Counted as requeued while the copy could not go out, then once as dead-lettered.
    let counted = |text: &str, outcome: &str| {
        let line = format!("ledgerflow_messages_total{{outcome=\"{outcome}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(line.as_str())?.parse::<u64>().ok())
    };
    let start = Instant::now();
    let text = loop {
        // Counted once the ack is out, a moment after the dead letter shows.
        let text = app.worker_metrics(port).await.unwrap_or_default();
        if counted(&text, "dead_lettered").is_some() || start.elapsed() > DEADLINE {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(counted(&text, "requeued").is_some_and(|n| n >= 1), "{text}");
    assert_eq!(counted(&text, "dead_lettered"), Some(1), "{text}");
    drop(worker);
    app.teardown().await;
}

/// A message whose AMQP headers nest deeply once overflowed the stack of lapin's I/O thread,
/// which parses them, and aborted the worker process, again at every restart while the
/// message stayed queued. The real process now takes it like any other message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_deeply_nested_headers_is_processed_without_a_crash() {
    use ledgerflow_messaging::lapin::BasicProperties;
    use ledgerflow_messaging::lapin::options::BasicPublishOptions;
    use ledgerflow_messaging::lapin::types::{AMQPValue, FieldArray, FieldTable};

    let mut app = spawn_app().await;
    let Pair { alice, a, b, .. } = app.alice_and_bob().await;
    app.fund(&a, 100).await;
    app.stop_worker(0).await;
    // RUST_MIN_STACK unset, as in production: the binary sets its own.
    let mut worker = {
        let mut cmd = app.cli();
        cmd.arg("worker").env("LEDGERFLOW_WORKER_NAME", "deep-headers").env_remove("RUST_MIN_STACK");
        app.launcher().spawn(cmd, "deep-headers").unwrap()
    };
    // 1,000 levels (5 KB) overflowed the default 2 MiB stack of the debug build tested here
    // (the release build's at about 1,800). The publisher (this test) needs no more stack
    // to write them than the worker to read them.
    let mut deep = AMQPValue::Void;
    for _ in 0..1_000 {
        deep = AMQPValue::FieldArray(FieldArray::from(vec![deep]));
    }
    let mut headers = FieldTable::default();
    headers.insert("deep".into(), deep);
    let ch = app.upstream.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let body = bytes(&app.upstream_command(&a, &b, 30, "deep-headers"));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_user_id(ledgerflow_tests::UPSTREAM_BROKER_USER.into());
    let exchange = app.topology.transfers();
    ch.basic_publish(exchange.as_str().into(), a.as_str().into(), BasicPublishOptions::default(), &body, props)
        .await
        .unwrap()
        .await
        .unwrap();

    assert_eq!(app.wait_upstream("deep-headers").await.status, TransactionStatus::Completed);
    assert_eq!(app.balance(&alice.token, &a).await, 70);
    assert!(worker.exited().is_none(), "the worker process is still running\n{}", worker.tail(20));
    app.teardown().await;
}

/// With a per-message TTL, a message published to the retry queue without one sat at its head
/// for ever, and every retry behind it with it. The delay is now the queue's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_expiration_in_the_retry_queue_stalls_no_retry() {
    use ledgerflow_messaging::lapin::BasicProperties;

    let mut app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    // Anyone allowed to publish there sends a command with no expiration to the retry exchange,
    // and one to each of earlier versions' (which the processes still declare, and the workers
    // empty into the current one).
    let planted = app.upstream_command(&b, &a, 1, "planted");
    let persistent = BasicProperties::default().with_delivery_mode(2);
    app.publish_with(&app.topology.retry(), &b, &bytes(&planted), persistent.clone()).await;
    let mut keys = vec!["planted".to_owned()];
    for (i, retired) in app.topology.retired_retries().iter().enumerate() {
        let key = format!("planted-retired-{i}");
        let planted = app.upstream_command(&b, &a, 1, &key);
        app.publish_with(retired, &b, &bytes(&planted), persistent.clone()).await;
        keys.push(key);
    }

    // Then a transfer that conflicts until released (someone else's open MongoDB transaction
    // holds Alice's account) goes round the retry queue, behind that message.
    let blocker = app.lock_account(&a).await;
    app.stop_worker(0).await;
    let impatient = app.store.clone().with_conflict_retry_budget(Duration::from_millis(300));
    let mut config = app.worker_config("impatient");
    config.max_attempts = 1_000;
    app.add_worker_with(impatient, config);
    let retried_before = app.metric_sum("ledgerflow_messages_retried_total").await;
    let id = app.accept_transfer(&alice, &a, &b, 100, "retried").await.transaction.id;
    let start = Instant::now();
    while app.metric_sum("ledgerflow_messages_retried_total").await <= retried_before {
        assert!(start.elapsed() < DEADLINE, "the transfer was never sent to the retry queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.release().await;

    // Its retry comes back all the same, and so do the planted commands.
    let done = app.settled(&alice, &id).await;
    assert_eq!(done.status, "COMPLETED", "{done:?}");
    // Nobody vouches for the planted ones (no user_id): out of the retry queue, they are
    // refused as anonymous and dead-lettered.
    let dead = app.dead_letters(keys.len()).await;
    let dead: Vec<Value> =
        dead.iter().map(|d| serde_json::from_slice::<Value>(d).unwrap()["idempotencyKey"].clone()).collect();
    assert!(keys.iter().all(|k| dead.contains(&json!(k))), "{keys:?} not all in {dead:?}");
    assert_eq!(app.balance(&bob.token, &b).await, 100);
    for queue in std::iter::once(app.topology.retry()).chain(app.topology.retired_retries()) {
        assert_eq!(app.ready_in(&queue).await, 0, "{queue}");
    }
    app.assert_reconciles().await;
    app.teardown().await;
}

/// A command whose publisher set an `expiration` that lapses in its partition queue is
/// dead-lettered unread by the broker; it must not vanish without a result. It is reported
/// FAILED EXPIRED (once: the workers share the observer's queue), a gateway transaction
/// behind it ends FAILED EXPIRED rather than PENDING for ever, and the dead letter stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_expires_in_its_queue_fails_expired_and_stays_dead_lettered() {
    use ledgerflow_messaging::lapin::BasicProperties;

    // A republisher that would not resend the user's transfer during the test.
    let mut app = spawn_app_configured(1, |g| g.republish_after = Duration::from_secs(3_600).into()).await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    app.stop_worker(0).await;

    // A user's transfer, recorded PENDING, whose command is sent again with a millisecond to
    // live (as a tampering or misconfigured relay would)...
    let id = app.accept_transfer(&alice, &a, &b, 20, "user-short-lived").await.transaction.id;
    let taken = app.drain_commands(1, 1).await;
    assert_eq!(taken.len(), 1);
    let props = taken[0].properties.clone().with_expiration("1".into());
    app.publish_with(&app.topology.transfers(), &a, &taken[0].data, props).await;
    // ...and an upstream command published with one.
    let upstream = app.upstream_command(&a, &b, 10, "short-lived");
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_expiration("1".into())
        .with_user_id(ledgerflow_tests::UPSTREAM_BROKER_USER.into());
    app.publish_with(&app.topology.transfers(), &a, &bytes(&upstream), props).await;

    // No worker takes them: both expire, and are dead-lettered (copied to the observer's queue).
    let start = Instant::now();
    while app.ready_in(&app.topology.expired()).await < 2 {
        assert!(start.elapsed() < DEADLINE, "the commands never expired into the observer's queue");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready_commands(&app.topology).await, 0);

    // Two workers start; one of them reports each FAILED EXPIRED, and the recorded one ends so.
    app.add_worker();
    app.add_worker();
    let failed = app.settled(&alice, &id).await;
    assert_eq!((failed.status.as_str(), failed.failure_reason.as_deref()), ("FAILED", Some("EXPIRED")));
    let result_schema = jsonschema::validator_for(&schema("transfer-result.v1.schema.json")).unwrap();
    let mut results = Vec::new();
    let start = Instant::now();
    while results.iter().filter(|r: &&Value| r["failureReason"] == "EXPIRED").count() < 2 {
        assert!(start.elapsed() < DEADLINE, "no EXPIRED results: {results:?}");
        results.extend(app.drain_queue(&app.topology.results(), 1, 10).await);
    }
    let expired: Vec<&Value> = results.iter().filter(|r| r["failureReason"] == "EXPIRED").collect();
    assert_eq!(expired.len(), 2, "{expired:?}");
    assert!(expired.iter().all(|r| result_schema.is_valid(r) && r["status"] == "FAILED"), "{expired:?}");
    let upstream = expired.iter().find(|r| r["idempotencyKey"] == "short-lived").expect("the upstream one");
    assert_eq!((&upstream["initiator"], &upstream["transactionId"]), (&json!("service:test-upstream"), &Value::Null));
    let user = expired.iter().find(|r| r["idempotencyKey"] == "user-short-lived").expect("the user's");
    assert_eq!(user["transactionId"], json!(id));
    // Reported once each, nothing moved, nothing recorded for the upstream command.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = app.drain_queue(&app.topology.results(), 0, 10).await;
    assert!(later.iter().all(|r| r["failureReason"] != "EXPIRED"), "{later:?}");
    let (initiator, key) = ("service:test-upstream".parse().unwrap(), "short-lived".parse().unwrap());
    assert!(app.store.find_by_key(&initiator, &key).await.unwrap().is_none());
    assert_eq!(app.balance(&alice.token, &a).await, 1_000);
    assert_eq!(app.balance(&bob.token, &b).await, 0);
    assert_eq!(app.ready_in(&app.topology.expired()).await, 0);

    // The dead letters stay for operators, with the broker's reason.
    let (code, listed) = app.run_cli(&["admin", "dlq", "list"]).await;
    assert_eq!(code, 0, "{listed}");
    assert!(listed.starts_with("2 dead-lettered"), "{listed}");
    assert_eq!(listed.matches("why=expired×1").count(), 2, "{listed}");
    assert!(listed.contains("key=short-lived") && listed.contains("key=user-short-lived"), "{listed}");
    app.assert_reconciles().await;
    app.teardown().await;
}
