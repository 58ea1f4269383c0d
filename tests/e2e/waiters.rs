//! Long polls across several gateways: each gateway receives the results its own waiters
//! need and no others, a wait is answered whichever gateway accepted the transfer, and the
//! durable results queue still receives every result.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ledgerflow_testkit::Gateway;
use ledgerflow_tests::{DEADLINE, Pair, Session, TestApp, close_broker_connections, spawn_app, spawn_app_with};

const BINDINGS: &str = "ledgerflow_gateway_result_bindings";
const RECEIVED: &str = "ledgerflow_gateway_results_received_total";

/// Waits until the gateway at `base` reports `want` for the metric `name`.
async fn metric_reaches(app: &TestApp, base: &str, name: &str, want: f64) {
    let by = Instant::now() + DEADLINE;
    loop {
        let got = app.metric_at(base, name).await;
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < by, "{name} at {base} is {got:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids of `count` transfers of 1 from `from` (unfunded: each FAILs once a worker runs) to
/// `to`, accepted through the gateway at `base`.
async fn accepted_through(
    app: &TestApp,
    base: &str,
    user: &Session,
    (from, to): (&str, &str),
    count: usize,
) -> Vec<String> {
    let client = ledgerflow_client::Client::new(base).signed_in(&user.token);
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let key = format!("wait-{}", uuid::Uuid::new_v4().simple());
        let transfer = ledgerflow_client::Transfer { from, to, amount: 1, idempotency_key: &key, description: None };
        ids.push(app.must("transfer", client.transfer(&transfer).await).transaction.id);
    }
    ids
}

/// Long polls on each id through the gateway at `base`, each answered with its status.
fn wait_through(base: &str, user: &Session, ids: &[String]) -> Vec<tokio::task::JoinHandle<String>> {
    let client = ledgerflow_client::Client::new(base).signed_in(&user.token);
    let wait = |id: String| {
        let client = client.clone();
        tokio::spawn(async move { client.wait(&id, 30).await.map_or_else(|e| format!("error: {e}"), |t| t.status) })
    };
    ids.iter().cloned().map(wait).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_receives_only_the_results_its_own_waiters_need() {
    // No worker yet: every transfer stays PENDING until all the waits are in place.
    let mut app = spawn_app_with(0).await;
    let names: Vec<String> = (0..3).map(|i| format!("waiters-{i}")).collect();
    let gateways: Vec<Gateway> = futures::future::join_all(names.iter().map(|n| app.spawn_gateway_process(n))).await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    const OWN: usize = 8;
    const UNWATCHED: usize = 15;

    let mut polls = Vec::new();
    let mut every_id = HashSet::new();
    for gateway in &gateways {
        let ids = accepted_through(&app, &gateway.base, &alice, (&a, &b), OWN).await;
        polls.push(wait_through(&gateway.base, &alice, &ids));
        every_id.extend(ids);
    }
    // Traffic nobody waits on, accepted by the in-process gateway.
    every_id.extend(accepted_through(&app, &app.base, &alice, (&a, &b), UNWATCHED).await);
    for gateway in &gateways {
        // One binding per id waited on, confirmed before the waiter read the database.
        metric_reaches(&app, &gateway.base, BINDINGS, OWN as f64).await;
    }

    app.add_worker();
    for (gateway, waits) in gateways.iter().zip(polls) {
        for wait in waits {
            assert_eq!(wait.await.unwrap(), "FAILED", "a wait on {} ended with the transfer's outcome", gateway.base);
        }
    }

    let total = every_id.len();
    assert_eq!(total, 3 * OWN + UNWATCHED);
    for gateway in &gateways {
        // The last waiter on an id leaves, and its binding goes.
        metric_reaches(&app, &gateway.base, BINDINGS, 0.0).await;
        let received = app.metric_at(&gateway.base, RECEIVED).await.unwrap();
        // Its own waiters' results (a redelivery may repeat one), never everybody's.
        assert!(
            (1.0..=(OWN + 2) as f64).contains(&received),
            "{} received {received} results for its {OWN} waits, of {total} in all",
            gateway.base
        );
    }
    // The durable results queue still has them all.
    let results = app.drain_queue(&app.topology.results(), total, total + 10).await;
    let published: HashSet<String> =
        results.iter().filter_map(|r| r["transactionId"].as_str().map(str::to_owned)).collect();
    assert_eq!(published, every_id);
    // Killed before the teardown deletes the queues, which they would declare again.
    drop(gateways);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_one_gateway_ends_promptly_for_a_transfer_another_accepted() {
    let mut app = spawn_app_with(0).await;
    let other = app.spawn_gateway_process("waiters-other").await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    // Accepted by the in-process gateway, waited on through the other, by both parties.
    let ids = accepted_through(&app, &app.base, &alice, (&a, &b), 1).await;
    let mut waits = wait_through(&other.base, &alice, &ids);
    waits.extend(wait_through(&other.base, &bob, &ids));
    waits.extend(wait_through(&other.base, &alice, &ids));
    // Three waiters on one id: one binding.
    metric_reaches(&app, &other.base, BINDINGS, 1.0).await;

    let started = Instant::now();
    app.add_worker();
    for wait in waits {
        assert_eq!(wait.await.unwrap(), "FAILED");
    }
    // Woken by the result, not by the end of its 30 s.
    assert!(started.elapsed() < Duration::from_secs(10), "the waits took {:?}", started.elapsed());
    assert_eq!(app.metric_at(&other.base, RECEIVED).await, Some(1.0));
    metric_reaches(&app, &other.base, BINDINGS, 0.0).await;
    drop(other);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_lost_its_result_link_binds_the_ids_still_waited_on_again() {
    let mut app = spawn_app_with(0).await;
    let mut gateway = app.spawn_gateway_process("waiters-relinked").await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    let ids = accepted_through(&app, &app.base, &alice, (&a, &b), 1).await;
    let waits = wait_through(&gateway.base, &alice, &ids);
    metric_reaches(&app, &gateway.base, BINDINGS, 1.0).await;

    // Cut the watcher's connection (named after this test's prefix) from the broker's side.
    let watcher = format!("{}-gateway-results", app.topology.prefix());
    let by = Instant::now() + DEADLINE;
    while close_broker_connections(&watcher) == 0 {
        assert!(Instant::now() < by, "the gateway's result watcher never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It says so once its bindings are gone with the queue (the gauge falls to 0 first)...
    while !gateway.process.log_text().contains("result watcher lost the broker") {
        assert!(gateway.process.exited().is_none(), "{}", gateway.process.tail(20));
        assert!(Instant::now() < by, "the gateway never noticed: {}", gateway.process.tail(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...then binds the id still waited on to its new queue.
    metric_reaches(&app, &gateway.base, BINDINGS, 1.0).await;

    app.add_worker();
    for wait in waits {
        assert_eq!(wait.await.unwrap(), "FAILED");
    }
    // The result reached the new queue: the wait was not left to its re-reads.
    assert_eq!(app.metric_at(&gateway.base, RECEIVED).await, Some(1.0));
    drop(gateway);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_results_queue_still_receives_every_result() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    let waited = accepted_through(&app, &app.base, &alice, (&a, &b), 5).await;
    let unwaited = accepted_through(&app, &app.base, &alice, (&a, &b), 5).await;
    for wait in wait_through(&app.base, &alice, &waited) {
        assert_eq!(wait.await.unwrap(), "FAILED");
    }
    let results = app.drain_queue(&app.topology.results(), 10, 20).await;
    let published: HashSet<&str> = results.iter().filter_map(|r| r["transactionId"].as_str()).collect();
    for id in waited.iter().chain(&unwaited) {
        assert!(published.contains(id.as_str()), "no result for {id} in {results:?}");
    }
    app.teardown().await;
}
