//! The policy docs/operations.md gives for expired commands ("Expired commands dead-lettered
//! at least once"), on a RabbitMQ node of the test's own: the shared broker retries an
//! at-least-once dead letter only every three minutes, and this node is told to retry every
//! second (`dead_letter_worker_publisher_confirm_timeout`), which nothing else may change on
//! the shared one. A command expires while its dead letter has nowhere to go (both queues the
//! dead-letter exchange feeds are unbound from it); with the documented policy on the
//! partitions it must wait, and reach a worker, which reports it FAILED `EXPIRED`, once they
//! are bound again. Without that policy RabbitMQ drops it, and this test fails (tried).

use std::time::{Duration, Instant};

use ledgerflow_messaging::lapin::types::FieldTable;
use ledgerflow_messaging::{close, connect};
use ledgerflow_tests::nodes::RabbitCluster;
use ledgerflow_tests::processes::Cluster;
use ledgerflow_tests::serde_json::{self, Value, json};
use ledgerflow_tests::{UPSTREAM_BROKER_USER, mongodb_uri, persistent, publish_on};

/// Upper bound for the whole test, the node's start included.
const EXPIRY_TEST_LIMIT: Duration = Duration::from_secs(120);
/// The node's at-least-once dead-lettering retries this often (RabbitMQ's default: 180 s).
const ADVANCED: &str = "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 1000}]}].";
/// The policy operations.md gives for the partitions.
const AT_LEAST_ONCE: &str = r#"{"dead-letter-strategy":"at-least-once","overflow":"reject-publish"}"#;
/// How long the dead letter has nowhere to go once the command expired: a few of the node's
/// retries.
const UNROUTABLE_FOR: Duration = Duration::from_secs(3);
/// Longest wait for one step.
const STEP_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_policy_an_expired_command_waits_until_it_can_be_dead_lettered() {
    let _turn = crate::SERIAL.lock().await;
    if tokio::time::timeout(EXPIRY_TEST_LIMIT, expired_command_waits()).await.is_err() {
        panic!("the expiry policy test did not finish within {EXPIRY_TEST_LIMIT:?}");
    }
}

async fn expired_command_waits() {
    let rabbit = RabbitCluster::start_configured(1, ADVANCED).await.unwrap_or_else(|e| panic!("{e:#}"));
    let user = UPSTREAM_BROKER_USER;
    rabbit.ctl(0, &["add_user", user, user]).await.unwrap();
    rabbit.ctl(0, &["set_permissions", "-p", "/", user, ".*", ".*", ".*"]).await.unwrap();
    // No worker yet: the command must expire in its partition.
    let mut c = Cluster::start_on("expiry-policy", 0, &mongodb_uri(), &rabbit.uri_list()).await;
    let pattern = format!("^{}\\.transfers\\.p[0-9]+$", c.env.prefix().replace('.', "\\."));
    let args = ["set_policy", "--apply-to", "queues", "--priority", "1", "partitions", &pattern, AT_LEAST_ONCE];
    rabbit.ctl(0, &args).await.unwrap();
    let t = c.topology.clone();
    let start = Instant::now();
    loop {
        let listed = rabbit.ctl(0, &["list_queues", "-q", "name", "policy"]).await.unwrap();
        let governed = |queue: String| listed.lines().any(|l| l.split('\t').eq([queue.as_str(), "partitions"]));
        if t.partitions().into_iter().all(governed) {
            break;
        }
        assert!(start.elapsed() < STEP_LIMIT, "the policy never applied: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing is bound to the dead-letter exchange any more.
    let conn = connect(&rabbit.uri_list(), "fault-test-binder").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let (dead, expired) = (t.dead_letters(), t.expired());
    let none = FieldTable::default;
    ch.queue_unbind(dead.as_str().into(), dead.as_str().into(), "".into(), none()).await.unwrap();
    ch.exchange_unbind(expired.as_str().into(), dead.as_str().into(), "".into(), Default::default(), none())
        .await
        .unwrap();

    // An upstream command with a millisecond to live.
    let (from, to) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let command = json!({
        "version": 1, "kind": "TRANSFER", "fromAccount": from, "toAccount": to, "amount": 10,
        "currency": "USD", "idempotencyKey": "expires-unheard", "initiator": "service:test-upstream",
        "requestedAt": chrono::Utc::now().to_rfc3339(),
    });
    let uri = format!("amqp://{user}:{user}@127.0.0.1:{}/%2f", rabbit.nodes[0].amqp_port);
    let upstream = connect(&uri, "fault-test-expiring-publisher").await.unwrap();
    let props = persistent().with_expiration("1".into()).with_user_id(user.into());
    let body = serde_json::to_vec(&command).unwrap();
    publish_on(&upstream.create_channel().await.unwrap(), &t.transfers(), &from, &body, props).await;
    close(&upstream, "done").await;

    // It expires (at the queue's next check, within seconds: it leaves the ready count then),
    // and for a few retries its dead letter has nowhere to go.
    let start = Instant::now();
    while c.ready_commands().await > 0 {
        assert!(start.elapsed() < STEP_LIMIT, "the command never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(UNROUTABLE_FOR).await;

    // Bound again, and a worker starts: it hears of the expiry.
    ch.queue_bind(dead.as_str().into(), dead.as_str().into(), "".into(), Default::default(), none()).await.unwrap();
    ch.exchange_bind(expired.as_str().into(), dead.as_str().into(), "".into(), Default::default(), none())
        .await
        .unwrap();
    close(&conn, "done").await;
    c.spawn_worker("worker-0", 16);
    let is_expiry = |r: &Value| r["idempotencyKey"] == "expires-unheard" && r["failureReason"] == "EXPIRED";
    let results = c
        .drain(&t.results(), STEP_LIMIT, |got| {
            got.iter().any(|b| serde_json::from_slice::<Value>(b).is_ok_and(|r| is_expiry(&r)))
        })
        .await;
    let results: Vec<Value> = results.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect();
    assert!(results.iter().any(is_expiry), "the expired command was dropped: {results:?}");
    let dead = c.drain(&t.dead_letters(), STEP_LIMIT, |got| !got.is_empty()).await;
    assert_eq!(dead.len(), 1, "its dead letter stays for operators");
    c.assert_processes_alive();
    c.teardown_keeping_queues().await;
}
