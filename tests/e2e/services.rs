//! Upstream services act only within their grant: registered with `ledgerflow admin
//! services`, identified by the broker user RabbitMQ vouches for (`user_id`), refused
//! (FAILED `UNAUTHORIZED`, dead-lettered, no money moved) outside it.

use std::time::Duration;

use ledgerflow_domain::AccountId;
use ledgerflow_messaging::lapin::Connection;
use ledgerflow_messaging::lapin::types::{AMQPValue, FieldTable};
use ledgerflow_messaging::{ATTEMPT_HEADER, PUBLISHER_HEADER};
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{
    DEADLINE, OTHER_UPSTREAM_BROKER_USER, Pair, TestApp, UPSTREAM_BROKER_USER, amqp_uri_as, persistent, publish_on,
    schema, spawn_app,
};

/// Longer than a worker takes to read the services again (every second).
const REFRESH: Duration = Duration::from_millis(1_500);

/// The payroll service, publishing as the second test upstream user.
const PAYROLL: &str = "payroll";

fn transfer(kind: &str, from: &str, to: &str, amount: i64, key: &str, initiator: &str) -> Value {
    json!({
        "version": 1, "kind": kind, "fromAccount": from, "toAccount": to, "amount": amount,
        "currency": "USD", "idempotencyKey": key, "initiator": initiator,
        "requestedAt": chrono::Utc::now().to_rfc3339(),
    })
}

fn payroll_pays(from: &str, to: &str, amount: i64, key: &str) -> Value {
    transfer("TRANSFER", from, to, amount, key, "service:payroll")
}

/// Publishes `body` to the transfers exchange on `connection` (as its broker user, which the
/// broker vouches for in `user_id` when `vouched`), with extra headers.
async fn publish(app: &TestApp, connection: &Connection, body: &Value, vouched: Option<&str>, headers: FieldTable) {
    let mut props = persistent().with_headers(headers);
    if let Some(user) = vouched {
        props = props.with_user_id(user.into());
    }
    let ch = connection.create_channel().await.unwrap();
    publish_on(&ch, &app.topology.transfers(), "", &serde_json::to_vec(body).unwrap(), props).await;
}

async fn as_payroll() -> Connection {
    ledgerflow_messaging::connect(&amqp_uri_as(OTHER_UPSTREAM_BROKER_USER), "test-payroll").await.unwrap()
}

/// Waits for the result under `key` (taking the results before it off the queue).
async fn result_for(app: &TestApp, key: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let results = app.drain_queue(&app.topology.results(), 1, 100).await;
        if let Some(mine) = results.into_iter().find(|r| r["idempotencyKey"] == key) {
            return mine;
        }
        assert!(start.elapsed() < DEADLINE, "no result under {key}");
    }
}

/// Asserts `key` was refused: FAILED UNAUTHORIZED (naming `initiator`, or no one), nothing
/// recorded, and a dead letter saying so with `code`.
async fn assert_refused(app: &TestApp, key: &str, initiator: Option<&str>, code: &str) {
    let result = result_for(app, key).await;
    let result_schema = jsonschema::validator_for(&schema("transfer-result.v1.schema.json")).unwrap();
    assert!(result_schema.is_valid(&result), "{result}");
    assert_eq!((&result["status"], &result["failureReason"]), (&json!("FAILED"), &json!("UNAUTHORIZED")), "{result}");
    assert_eq!(result["transactionId"], Value::Null, "{result}");
    assert_eq!(result["initiator"].as_str(), initiator, "{result}");
    let (code_seen, listed) = app.run_cli(&["admin", "dlq", "list"]).await;
    assert_eq!(code_seen, 0, "{listed}");
    let line = listed.lines().find(|l| l.contains(&format!("key={key} "))).unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains(&format!("why=UNAUTHORIZED ({code}: ")), "{line}");
    assert!(line.contains("from="), "{line}");
    app.dead_letters(1).await;
    for scope in ["service:payroll", "service:test-upstream"] {
        let found = app.store.find_by_key(&scope.parse().unwrap(), &key.parse().unwrap()).await.unwrap();
        assert!(found.is_none(), "{key} recorded under {scope}");
    }
}

async fn admin(app: &TestApp, args: &[&str]) -> String {
    let mut all = vec!["admin", "services"];
    all.extend_from_slice(args);
    let (code, out) = app.run_cli(&all).await;
    assert_eq!(code, 0, "ledgerflow {all:?}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_service_pays_within_its_grant_and_nothing_else() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    app.fund(&b, 1_000).await;
    let payroll = as_payroll().await;
    // A broker user no service is registered for: nobody to act as.
    let early = payroll_pays(&a, &b, 100, "unregistered");
    publish(&app, &payroll, &early, Some(OTHER_UPSTREAM_BROKER_USER), FieldTable::default()).await;
    assert_refused(&app, "unregistered", None, "UNKNOWN_PUBLISHER").await;

    admin(&app, &["add", PAYROLL, "--broker-user", OTHER_UPSTREAM_BROKER_USER]).await;
    let shown = admin(&app, &["grant", PAYROLL, "--kinds", "TRANSFER", "--debit-account", &a]).await;
    assert!(shown.contains("TRANSFER") && shown.contains(&a), "{shown}");
    tokio::time::sleep(REFRESH).await;

    // Within the grant: paid.
    publish(
        &app,
        &payroll,
        &payroll_pays(&a, &b, 100, "salary-1"),
        Some(OTHER_UPSTREAM_BROKER_USER),
        FieldTable::default(),
    )
    .await;
    let paid = result_for(&app, "salary-1").await;
    assert_eq!((&paid["status"], &paid["initiator"]), (&json!("COMPLETED"), &json!("service:payroll")), "{paid}");

    // Out of it, each refused with its reason and no money moved.
    let funding = AccountId::funding("USD".parse().unwrap()).to_string();
    let out_of_grant = [
        (payroll_pays(&b, &a, 100, "from-b"), "DEBIT_NOT_GRANTED", Some("service:payroll")),
        (
            transfer("TRANSFER", &a, &b, 100, "as-other", "service:test-upstream"),
            "NOT_ITS_INITIATOR",
            Some("service:payroll"),
        ),
        (
            transfer("INITIAL_FUNDS", &funding, &a, 1_000_000, "mint", "service:payroll"),
            "KIND_NOT_GRANTED",
            Some("service:payroll"),
        ),
    ];
    for (body, code, initiator) in &out_of_grant {
        let key = body["idempotencyKey"].as_str().unwrap();
        publish(&app, &payroll, body, Some(OTHER_UPSTREAM_BROKER_USER), FieldTable::default()).await;
        assert_refused(&app, key, *initiator, code).await;
    }

    // A command for a recorded transaction is LedgerFlow's own to send.
    let mut forged = payroll_pays(&a, &b, 100, "recorded");
    forged["transactionId"] = json!(uuid::Uuid::now_v7().to_string());
    publish(&app, &payroll, &forged, Some(OTHER_UPSTREAM_BROKER_USER), FieldTable::default()).await;
    assert_refused(&app, "recorded", None, "RECORDED_TRANSACTION").await;

    // Headers claiming another publisher (one allowed everything) are not believed.
    let mut claims = FieldTable::default();
    claims.insert(PUBLISHER_HEADER.into(), AMQPValue::LongString(UPSTREAM_BROKER_USER.into()));
    let posing = transfer("TRANSFER", &b, &a, 100, "posing", "service:test-upstream");
    publish(&app, &payroll, &posing, Some(OTHER_UPSTREAM_BROKER_USER), claims).await;
    assert_refused(&app, "posing", Some("service:payroll"), "NOT_ITS_INITIATOR").await;

    // Without user_id nobody vouches for the publisher, even one registered.
    publish(&app, &payroll, &payroll_pays(&a, &b, 100, "anonymous"), None, FieldTable::default()).await;
    assert_refused(&app, "anonymous", None, "ANONYMOUS").await;

    assert_eq!(app.balance(&alice.token, &a).await, 900);
    assert_eq!(app.balance(&bob.token, &b).await, 1_100);
    app.assert_reconciles().await;
    let _ = payroll.close(200, "done".into()).await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_and_disabling_take_effect_within_seconds_queued_commands_included() {
    let mut app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    admin(&app, &["add", PAYROLL, "--broker-user", OTHER_UPSTREAM_BROKER_USER]).await;
    admin(&app, &["grant", PAYROLL, "--kinds", "TRANSFER,HOLD", "--debit-owner", &alice.id]).await;
    tokio::time::sleep(REFRESH).await;
    let payroll = as_payroll().await;
    let vouched = Some(OTHER_UPSTREAM_BROKER_USER);

    // Every account of a granted owner may be debited.
    publish(&app, &payroll, &payroll_pays(&a, &b, 100, "before"), vouched, FieldTable::default()).await;
    assert_eq!(result_for(&app, "before").await["status"], "COMPLETED");

    // Revoked: refused within seconds, with no restart.
    let shown = admin(&app, &["revoke", PAYROLL, "--debit-owner", &alice.id]).await;
    assert!(!shown.contains(&alice.id), "{shown}");
    tokio::time::sleep(REFRESH).await;
    publish(&app, &payroll, &payroll_pays(&a, &b, 100, "after-revoke"), vouched, FieldTable::default()).await;
    assert_refused(&app, "after-revoke", Some("service:payroll"), "DEBIT_NOT_GRANTED").await;

    // Granted again, then disabled while its commands wait in the queue: all refused.
    admin(&app, &["grant", PAYROLL, "--debit-account", &a]).await;
    app.stop_worker(0).await;
    for i in 0..3 {
        publish(&app, &payroll, &payroll_pays(&a, &b, 10, &format!("queued-{i}")), vouched, FieldTable::default())
            .await;
    }
    let shown = admin(&app, &["disable", PAYROLL]).await;
    assert!(shown.contains("enabled         false"), "{shown}");
    app.add_worker();
    let mut refused = Vec::new();
    let start = std::time::Instant::now();
    while refused.len() < 3 && start.elapsed() < DEADLINE {
        let results = app.drain_queue(&app.topology.results(), 1, 100).await;
        refused.extend(
            results.into_iter().filter(|r| r["idempotencyKey"].as_str().is_some_and(|k| k.starts_with("queued-"))),
        );
    }
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|r| r["failureReason"] == "UNAUTHORIZED"), "{refused:?}");
    let (_, listed) = app.run_cli(&["admin", "dlq", "list"]).await;
    assert_eq!(listed.matches("why=UNAUTHORIZED (SERVICE_DISABLED: ").count(), 3, "{listed}");

    assert_eq!(app.balance(&alice.token, &a).await, 900);
    assert_eq!(app.balance(&bob.token, &b).await, 100);
    let listed = admin(&app, &["list"]).await;
    assert!(listed.contains("service:payroll") && listed.contains("false"), "{listed}");
    let _ = payroll.close(200, "done".into()).await;
    app.teardown().await;
}

/// `x-ledgerflow-attempt` counts tries only when LedgerFlow itself wrote it: a service that
/// claims its command was tried `max_attempts` times already cannot turn a transient fault
/// into a final one (nor, claiming fewer, buy itself more tries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_attempt_count_is_not_believed() {
    let mut app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    // Someone else's open MongoDB transaction holds Alice's account: the command conflicts
    // until it is released, and goes round the retry queue meanwhile.
    let blocker = app.lock_account(&a).await;
    app.stop_worker(0).await;
    let impatient = app.store.clone().with_conflict_retry_budget(Duration::from_millis(300));
    let config = app.worker_config("impatient");
    assert_eq!(config.max_attempts, 3, "the test settings' attempts");
    app.add_worker_with(impatient, config);

    let retried = || app.metric_sum("ledgerflow_messages_retried_total");
    let before = retried().await;
    let mut claims = FieldTable::default();
    claims.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
    let cmd = app.upstream_command(&a, &b, 100, "claims-tried");
    publish(&app, &app.upstream, &cmd, Some(UPSTREAM_BROKER_USER), claims).await;
    let start = std::time::Instant::now();
    while retried().await <= before {
        assert!(start.elapsed() < DEADLINE, "the command was never retried (given up at once?)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.release().await;

    let done = app.wait_upstream("claims-tried").await;
    assert_eq!(done.status.to_string(), "COMPLETED", "{done:?}");
    assert_eq!(app.balance(&alice.token, &a).await, 900);
    assert_eq!(app.balance(&bob.token, &b).await, 100);
    app.teardown().await;
}
