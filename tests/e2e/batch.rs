//! Batched commits: several commands in one MongoDB transaction, each decided on its own
//! merits, against the real database and broker.

use std::time::Duration;

use ledgerflow_domain::{AccountId, FailureReason, TransactionId, TransactionStatus, TransferCommand};
use ledgerflow_store::{Execution, Grouping, InsertPending, Outcome, StoreError, TransactionRecord};
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{Pair, TestApp, spawn_app};
use mongodb::bson::doc;

fn command(v: &Value) -> TransferCommand {
    TransferCommand::parse(&serde_json::to_vec(v).unwrap()).unwrap()
}

fn decided(outcome: &Outcome) -> &TransactionRecord {
    match outcome {
        Ok(Execution::Decided { record, .. }) => record,
        other => panic!("expected a decision, got {other:?}"),
    }
}

fn assert_completed(outcome: &Outcome) {
    let record = decided(outcome);
    assert_eq!((record.status, record.failure_reason), (TransactionStatus::Completed, None), "{record:?}");
}

fn assert_failed(outcome: &Outcome, reason: FailureReason) {
    let record = decided(outcome);
    assert_eq!((record.status, record.failure_reason), (TransactionStatus::Failed, Some(reason)), "{record:?}");
}

async fn entry_count(app: &TestApp) -> u64 {
    app.raw_db().await.collection::<mongodb::bson::Document>("entries").count_documents(doc! {}).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_decides_each_command_on_its_own_merits() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    let nobody = AccountId::generate().to_string();

    let mut fund = app.upstream_command(&b, &a, 100, "fund-a");
    fund["kind"] = json!("INITIAL_FUNDS");
    fund.as_object_mut().unwrap().remove("fromAccount");
    let t1 = app.upstream_command(&a, &b, 60, "t1");
    let mut unknown_id = app.upstream_command(&a, &b, 1, "gateway-made");
    let missing = TransactionId::generate();
    unknown_id["transactionId"] = json!(missing.to_string());
    let batch: Vec<TransferCommand> = [
        fund,                                        // the funding account is created on first use
        t1.clone(),                                  // a: 100 → 40
        app.upstream_command(&a, &b, 60, "t2"),      // sees t1's debit: insufficient
        app.upstream_command(&a, &nobody, 10, "t3"), // unknown receiver
        app.upstream_command(&a, &b, 40, "t4"),      // a: 40 → 0
        t1.clone(),                                  // the same command again
        app.upstream_command(&a, &b, 5, "t1"),       // t1's key, another body
        unknown_id,                                  // names a transaction never recorded
    ]
    .iter()
    .map(command)
    .collect();

    let out = app.store.execute_batch(&batch).await;
    assert_eq!(out.len(), batch.len());
    assert_completed(&out[0]);
    assert_completed(&out[1]);
    assert_failed(&out[2], FailureReason::InsufficientFunds);
    assert_failed(&out[3], FailureReason::AccountNotFound);
    assert_completed(&out[4]);
    let t1_id = decided(&out[1]).id;
    assert!(matches!(&out[5], Ok(Execution::AlreadyTerminal { record: r, .. }) if r.id == t1_id), "{:?}", out[5]);
    assert_eq!(out[6].as_ref().unwrap(), &Execution::Mismatch { existing: t1_id });
    assert_eq!(out[7].as_ref().unwrap(), &Execution::UnknownTransaction(missing));

    // What was decided is what is stored, and the books hold.
    for outcome in &out[..5] {
        let record = decided(outcome);
        assert_eq!(app.store.find_transaction(record.id).await.unwrap().as_ref(), Some(record));
    }
    assert_eq!(app.balance(&alice.token, &a).await, 0);
    assert_eq!(app.balance(&bob.token, &b).await, 100);
    let seqs: Vec<i64> = app.entries(&alice.token, &a).await.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 2, 1], "a's entries are one gapless chain, newest first");
    assert_eq!(entry_count(&app).await, 6, "three postings, two entries each");
    app.assert_reconciles().await;

    // Delivered again, the whole batch writes nothing and answers as before.
    let again = app.store.execute_batch(&batch).await;
    for (i, outcome) in again.iter().enumerate().take(5) {
        assert!(
            matches!(outcome, Ok(Execution::AlreadyTerminal { record: r, .. }) if r == decided(&out[i])),
            "{i}: {outcome:?}"
        );
    }
    assert_eq!(again[6].as_ref().unwrap(), &Execution::Mismatch { existing: t1_id });
    assert_eq!(entry_count(&app).await, 6);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_fails_only_its_own_command() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;

    // A gateway-style command whose recorded transaction was since damaged by hand.
    let mut poisoned = app.upstream_command(&a, &b, 7, "poisoned");
    poisoned["transactionId"] = json!(TransactionId::generate().to_string());
    let poisoned = command(&poisoned);
    app.store.insert_pending(&poisoned).await.unwrap();
    let transactions = app.raw_db().await.collection::<mongodb::bson::Document>("transactions");
    let id = poisoned.transaction_id.unwrap().to_string();

    // Two kinds of damage: a value the domain refuses (decided per command inside the batch)
    // and a type the driver cannot even read (the batch falls back to one command at a time).
    for (round, damage) in [doc! { "amount": -7_i64 }, doc! { "amount": "seven" }].into_iter().enumerate() {
        transactions.update_one(doc! { "_id": &id }, doc! { "$set": damage }).await.unwrap();
        let batch = [
            command(&app.upstream_command(&a, &b, 10, &format!("before-{round}"))),
            poisoned.clone(),
            command(&app.upstream_command(&a, &b, 20, &format!("after-{round}"))),
        ];
        let out = app.store.execute_batch(&batch).await;
        assert_completed(&out[0]);
        match round {
            0 => assert!(matches!(&out[1], Err(StoreError::Corrupt { .. })), "{:?}", out[1]),
            _ => assert!(matches!(&out[1], Err(StoreError::Database(_))), "{:?}", out[1]),
        }
        assert_completed(&out[2]);
    }
    assert_eq!(app.balance(&alice.token, &a).await, 1_000 - 60);
    assert_eq!(app.balance(&bob.token, &b).await, 60);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_commits_a_burst_in_batches_and_answers_every_command() {
    let mut app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 400).await;
    // Queue the burst with no worker running, so the next worker takes it in big batches.
    app.stop_worker(0).await;
    let _ = app.drain_queue(&app.topology.results(), 0, 100).await;
    let nobody = AccountId::generate().to_string();
    let mut sent = Vec::new();
    for i in 0..50 {
        sent.push(app.upstream_command(&a, &b, 10, &format!("burst-{i}")));
    }
    for i in 0..5 {
        sent.push(app.upstream_command(&a, &nobody, 10, &format!("nowhere-{i}")));
    }
    for i in 0..5 {
        sent.push(app.upstream_command(&a, &b, 10, &format!("burst-{i}")));
    }
    for cmd in &sent {
        app.publish_raw("", &serde_json::to_vec(cmd).unwrap()).await;
    }
    let mut config = app.worker_config("burst-worker");
    config.prefetch = 100;
    config.max_batch = 64;
    app.add_worker_with(app.store.clone(), config);

    let results = app.drain_queue(&app.topology.results(), sent.len(), sent.len() + 10).await;
    assert_eq!(results.len(), sent.len(), "one result per delivery");
    let count = |status: &str, reason: Value| {
        results.iter().filter(|r| r["status"] == status && r["failureReason"] == reason).count()
    };
    // 400 covers 40 of the 50 distinct transfers; the 5 repeats answer with their originals.
    let completed = count("COMPLETED", Value::Null);
    let insufficient = count("FAILED", json!("INSUFFICIENT_FUNDS"));
    assert_eq!(completed + insufficient, 55, "{results:?}");
    assert!((40..=45).contains(&completed), "40 completions plus up to 5 repeats of them: {completed}");
    assert_eq!(count("FAILED", json!("ACCOUNT_NOT_FOUND")), 5);
    assert_eq!(app.balance(&alice.token, &a).await, 0);
    assert_eq!(app.balance(&bob.token, &b).await, 400);
    let initiator = "service:test-upstream".parse().unwrap();
    let mut completed_ids = 0;
    for i in 0..50 {
        let t = app.store.find_by_key(&initiator, &format!("burst-{i}").parse().unwrap()).await.unwrap().unwrap();
        completed_ids += usize::from(t.status == TransactionStatus::Completed);
    }
    assert_eq!(completed_ids, 40);
    app.assert_reconciles().await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_on_the_same_account_never_overdraw_it() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    // Four batches of 50 debits of 10 from one account, all at once: 2,000 asked, 1,000 there.
    // They conflict on the account; the losers retry (or split and retry) and see the winners.
    let batches: Vec<Vec<TransferCommand>> = (0..4)
        .map(|k| (0..50).map(|i| command(&app.upstream_command(&a, &b, 10, &format!("c{k}-{i}")))).collect())
        .collect();
    let outcomes = futures::future::join_all(batches.iter().map(|batch| app.store.execute_batch(batch))).await;
    let decided: Vec<&TransactionRecord> = outcomes.iter().flatten().map(decided).collect();
    assert_eq!(decided.len(), 200);
    let completed = decided.iter().filter(|r| r.status == TransactionStatus::Completed).count();
    let refused = decided.iter().filter(|r| r.failure_reason == Some(FailureReason::InsufficientFunds)).count();
    assert_eq!((completed, refused), (100, 100));
    assert_eq!(app.balance(&alice.token, &a).await, 0);
    assert_eq!(app.balance(&bob.token, &b).await, 1_000);
    app.assert_reconciles().await;
    app.teardown().await;
}

/// The gateway records concurrent transfers as PENDING in one unordered insert; a reused
/// idempotency key, against the database or within the same insert, fails only its own
/// document and is answered with the record that holds the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_records_inserted_together_each_get_their_own_answer() {
    let app = spawn_app().await;
    let Pair { a, b, .. } = app.alice_and_bob().await;
    let gateway_style = |amount: i64, key: &str| {
        let mut v = app.upstream_command(&a, &b, amount, key);
        v["transactionId"] = json!(TransactionId::generate().to_string());
        command(&v)
    };
    let earlier = gateway_style(5, "earlier");
    let Ok(InsertPending::Created(recorded)) = app.store.insert_pending(&earlier).await else {
        panic!("the first insert of a key must create its record")
    };

    let fresh = gateway_style(7, "fresh");
    let group = [fresh.clone(), gateway_style(5, "earlier"), gateway_style(9, "fresh"), gateway_style(11, "other")];
    let out = app.store.insert_pending_many(&group).await;
    let created = |i: usize| match &out[i] {
        Ok(InsertPending::Created(r)) => r.clone(),
        other => panic!("command {i}: expected Created, got {other:?}"),
    };
    let existing = |i: usize| match &out[i] {
        Ok(InsertPending::Existing(r)) => r.clone(),
        other => panic!("command {i}: expected Existing, got {other:?}"),
    };
    assert_eq!(created(0).id, fresh.transaction_id.unwrap());
    assert_eq!(existing(1).id, recorded.id);
    assert_eq!((existing(2).id, existing(2).amount.minor()), (fresh.transaction_id.unwrap(), 7));
    assert_eq!((created(3).amount.minor(), created(3).status), (11, TransactionStatus::Pending));

    let transactions = app.raw_db().await.collection::<mongodb::bson::Document>("transactions");
    let keys = ["earlier", "fresh", "other"];
    let stored = transactions.count_documents(doc! { "idempotencyKey": { "$in": keys.to_vec() } }).await.unwrap();
    assert_eq!(stored, 3, "one record per key, nothing else written");
    app.teardown().await;
}

/// Concurrent callers of one PENDING writer share inserts (lingering to fill them, as the
/// gateway's does) and each gets its own record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_writer_answers_each_concurrent_caller() {
    let app = spawn_app().await;
    let Pair { a, b, .. } = app.alice_and_bob().await;
    let writer = app.store.pending_writer(Grouping { max: 8, linger: Duration::from_millis(5) });
    let calls = (0..40).map(|i| {
        let mut v = app.upstream_command(&a, &b, i + 1, &format!("k{}", i % 30));
        v["transactionId"] = json!(TransactionId::generate().to_string());
        let (writer, cmd) = (writer.clone(), command(&v));
        tokio::spawn(async move { (cmd.clone(), writer.insert(cmd).await) })
    });
    let mut created = 0;
    for call in futures::future::join_all(calls).await {
        let (cmd, result) = call.unwrap();
        match result.unwrap() {
            InsertPending::Created(r) => {
                assert_eq!((r.id, r.idempotency_key), (cmd.transaction_id.unwrap(), cmd.idempotency_key));
                created += 1;
            }
            InsertPending::Existing(r) => assert_eq!(r.idempotency_key, cmd.idempotency_key),
        }
    }
    assert_eq!(created, 30, "one record per distinct key");
    app.teardown().await;
}

/// Concurrent reads by id through one transaction reader share finds, and each caller gets
/// the transaction it named (a find returns its documents in index order, not in the order
/// asked), an id asked twice in a group gets it twice, an unknown id none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_reader_answers_each_concurrent_caller() {
    let app = spawn_app().await;
    let Pair { a, b, .. } = app.alice_and_bob().await;
    let cmds: Vec<TransferCommand> = (0..10)
        .map(|i| {
            let mut v = app.upstream_command(&a, &b, i + 1, &format!("read-{i}"));
            v["transactionId"] = json!(TransactionId::generate().to_string());
            command(&v)
        })
        .collect();
    for result in app.store.insert_pending_many(&cmds).await {
        assert!(matches!(result, Ok(InsertPending::Created(_))), "{result:?}");
    }
    let reader = app.store.transaction_reader(Grouping { max: 8, linger: Duration::from_millis(5) });
    // Newest first, twice over, with an unknown id among them.
    let mut asked: Vec<(TransactionId, Option<i64>)> = cmds
        .iter()
        .rev()
        .chain(cmds.iter())
        .map(|c| (c.transaction_id.unwrap(), Some(c.request.amount.minor())))
        .collect();
    asked.insert(7, (TransactionId::generate(), None));
    let calls = asked.iter().map(|&(id, _)| {
        let reader = reader.clone();
        tokio::spawn(async move { reader.find(id).await })
    });
    let read = futures::future::join_all(calls).await;
    for ((id, amount), read) in asked.iter().zip(read) {
        let read = read.unwrap().expect("a read");
        assert_eq!(read.as_ref().map(|r| (r.id, r.amount.minor())), amount.map(|a| (*id, a)), "read of {id}");
    }
    app.teardown().await;
}

/// `ledgerflow bench --rate N%` asks MongoDB for a checkpoint between its two loads, so that the
/// timed one does not pay for writing out the first: the test server must take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_takes_the_benchs_checkpoint() {
    let app = spawn_app().await;
    app.store.checkpoint().await.expect("a checkpoint (the fsync command)");
    app.teardown().await;
}
