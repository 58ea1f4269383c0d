//! Fault injection against real processes. Each test starts `ledgerflow gateway` and
//! `ledgerflow worker` as child processes on the shared RabbitMQ and MongoDB, drives a few
//! hundred transfers through them over HTTP, injects one fault, and then checks the
//! invariants:
//!
//! - every transfer the gateway recorded (202, or 503 `BROKER_UNAVAILABLE` with a transaction
//!   id) ends COMPLETED or FAILED, as its amount dictates: each account sends less than it was
//!   funded with except for a few deliberately uncovered transfers, so the outcome of every
//!   transfer is known whatever the order of processing;
//! - a COMPLETED transfer has exactly one DEBIT and one CREDIT of its amount, a FAILED one none;
//! - every balance is exactly what the completed transfers make it: nothing lost or doubled;
//! - `ledgerflow reconcile` passes and counts exactly the transactions the test made;
//! - every recorded transfer has a result on the result queue;
//! - every process still runs and none logged a panic.
//!
//! `holds` kills a worker while holds are in flight and checks the holds' own invariants
//! (see that module).
//!
//! `cluster` SIGKILLs a node of a RabbitMQ cluster and the primary of a MongoDB replica set,
//! both clusters of the test's own (see that module). `expiry` checks, on a RabbitMQ node of
//! its own, the policy that has expired commands dead-lettered at least once.
//!
//! The others stop and start the shared RabbitMQ and mongod, so they must run alone, after the
//! rest of the suite and one at a time: `cargo nextest run -p ledgerflow-tests --test faults
//! --test-threads 1` (under `cargo test` they serialise themselves). Each prints a `FAULTS`
//! summary line (`--no-capture`, or nextest's `--success-output immediate`, shows it).

mod cluster;
mod expiry;
mod holds;
mod verify;
mod workload;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ledgerflow_store::TransactionRecord;
use ledgerflow_tests::processes::{Cluster, stop};
use ledgerflow_tests::receiver::{Behaviour, Receiver};
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::services::{Services, consumer_tags};
use reqwest::StatusCode;

use crate::verify::{Extra, summary, verify, verify_published_and_delivered, wait_progress};
use crate::workload::{ACCOUNTS, Planned, Sent, WAIT, Workload, assert_all_accepted};

/// Upper bound for a whole test, whatever hangs.
const TEST_LIMIT: Duration = Duration::from_secs(180);
/// The holder's name under which a test takes the event relay's lease from the workers.
const TEST_RELAY: &str = "fault-test";
/// A request made while a service is down must be answered (503) within this.
const OUTAGE_ANSWER: Duration = Duration::from_secs(10);

/// Under `cargo test` (one process, many threads) the tests take turns; nextest runs each in
/// its own process and must be told `--test-threads 1`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fault_test(name: &str, test: impl Future<Output = ()>) {
    let _turn = SERIAL.lock().await;
    if tokio::time::timeout(TEST_LIMIT, test).await.is_err() {
        panic!("fault test {name} did not finish within {TEST_LIMIT:?}");
    }
}

/// The victim worker dies with commands in flight and, as far as the event stream goes,
/// between commit and publish: the test holds the relay's lease while the victim works, so that
/// every event the victim commits is still in the outbox when it is killed. The rescuer's relay
/// must then publish them all, and a dispatcher process deliver them all to a webhook.
///
/// The killed worker's open MongoDB transactions stay open on mongod until
/// `transactionLifetimeLimitSeconds` (60 s by default) and keep the account documents they
/// wrote locked; `scripts/services.sh` starts mongod with 10 s, as docs/operations.md advises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_leaves_its_deliveries_to_another_worker() {
    fault_test("sigkill", async {
        let started = Instant::now();
        let mut c = Cluster::start("sigkill", 1).await;
        let tap = c.tap_events().await;
        let receiver = Receiver::start(Behaviour::Accept).await;
        c.webhook_for_every_event(&receiver.url()).await;
        c.spawn_dispatcher("dispatcher");
        let mut w = Workload::setup(&c).await;
        // The funding worker stops, so that the transfers queue up for the one to be killed;
        // it hands the relay's lease over as it goes, and the test takes it.
        let status = stop(&mut c.procs.workers[0].process).await;
        assert!(status.success(), "worker-0 stopped cleanly: {status}");
        let lease = c.store.claim_relay(TEST_RELAY, None, TEST_LIMIT).await.unwrap();
        let lease = lease.expect("the stopped worker's relay handed its lease over");
        let plan = w.plan(300, "kill");
        let sent = w.send(&c, &plan, 16, &AtomicUsize::new(0)).await;
        assert_all_accepted(&sent);

        let victim = c.spawn_worker("victim", 32);
        wait_progress(&c, ACCOUNTS as u64 + 50).await;
        // Freeze it and kill it. Nobody else consumes, so the broker's requeueing of the
        // deliveries it had not acknowledged shows as a jump in the ready count.
        c.procs.workers[victim].process.signal("STOP").unwrap();
        let ready_before = c.ready_commands().await;
        let done_at_kill = c.count_terminal().await.unwrap() - ACCOUNTS as u64;
        let unpublished_at_kill = c.outbox_events().await;
        let status = c.procs.workers[victim].process.sigkill().unwrap();
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
        assert!(done_at_kill < plan.len() as u64, "the worker had finished everything before it was killed");
        // Each transfer's acceptance, and the decision of each the victim committed.
        assert!(
            unpublished_at_kill >= plan.len() as u64 + done_at_kill,
            "only {unpublished_at_kill} events unpublished at the kill, after {done_at_kill} decisions"
        );
        let start = Instant::now();
        let mut ready_after = c.ready_commands().await;
        while ready_after == ready_before && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ready_after = c.ready_commands().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        ready_after = c.ready_commands().await;
        let in_flight = ready_after.saturating_sub(ready_before);
        assert!(in_flight > 0, "the killed worker held no unacknowledged deliveries ({ready_before} ready)");
        // MongoDB transactions it had open stay open on the server (nothing aborts them but
        // mongod's transactionLifetimeLimitSeconds); those that had written an account lock it.
        let orphaned = c.idle_transactions().await.len();

        c.store.release_relay(TEST_RELAY, lease).await.unwrap();
        let rescuer = c.spawn_worker("rescuer", 16);
        let tally = verify(&c, &w, &sent, Extra::default()).await;
        let stream = verify_published_and_delivered(&c, &tap, &receiver).await;
        let rescued = c.redelivered_to(rescuer).len();
        c.assert_processes_alive();
        summary(
            "sigkill",
            &c,
            &w,
            &tally,
            0,
            &format!(
                "done_at_kill={done_at_kill} in_flight_at_kill={in_flight} redelivered_to_rescuer={rescued} \
                 orphaned_db_transactions={orphaned} unpublished_events_at_kill={unpublished_at_kill} {stream}"
            ),
            started,
        );
        c.teardown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_workers_ride_out_a_rabbitmq_restart_answering_503_meanwhile() {
    fault_test("rabbitmq", async {
        let started = Instant::now();
        let mut services = Services::default();
        let mut c = Cluster::start("rabbitmq", 2).await;
        let mut w = Workload::setup(&c).await;
        let plan = w.plan(480, "rmq");
        let (first, after) = plan.split_at(400);

        // Transfers stream in, one every 25 ms, while the workers process them; the broker
        // stops under them, and the stream goes on into the outage for 3 s (and then stops,
        // however many of the 400 are left).
        let stopped_at: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
        let answered = AtomicUsize::new(0);
        let pace = Instant::now();
        let in_outage = |at: Instant| stopped_at.lock().unwrap().is_some_and(|stop| at > stop);
        let (cr, wr, answered_r, in_outage_r) = (&c, &w, &answered, &in_outage);
        let send = futures::stream::iter(first.iter().enumerate())
            .take_while(|_| {
                let outage = stopped_at.lock().unwrap().map(|stop| stop.elapsed());
                std::future::ready(outage.is_none_or(|d| d < Duration::from_secs(3)))
            })
            .map(|(i, p)| async move {
                tokio::time::sleep_until((pace + Duration::from_millis(25) * i as u32).into()).await;
                let at = Instant::now();
                let Ok(sent) = tokio::time::timeout(OUTAGE_ANSWER, wr.send_one(cr, p)).await else {
                    panic!("transfer {} not answered within {OUTAGE_ANSWER:?} around the RabbitMQ stop", p.key);
                };
                answered_r.fetch_add(1, Ordering::SeqCst);
                (in_outage_r(at), sent)
            })
            .buffer_unordered(16)
            .collect::<Vec<(bool, Sent)>>();
        let stop = async {
            while answered.load(Ordering::SeqCst) < 40 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            services.stop_rabbitmq().await;
            *stopped_at.lock().unwrap() = Some(Instant::now());
        };
        let (streamed, ()) = tokio::join!(send, stop);
        let stopped_at = stopped_at.into_inner().unwrap().unwrap();

        // Whatever was sent while it was down is recorded and answered 503 at once.
        let during = streamed.iter().filter(|(outage, _)| *outage).count();
        assert!(during > 0, "no transfer was sent during the outage: all {} went before RabbitMQ stopped", first.len());
        for (outage, s) in &streamed {
            let ok = s.deferred() && s.recorded_id().is_some() || (!outage && s.status() == Some(StatusCode::ACCEPTED));
            assert!(ok, "{} (sent during the outage: {outage}): {:?}", s.plan.key, s.answer);
        }
        let mut sent: Vec<Sent> = streamed.into_iter().map(|(_, s)| s).collect();
        let (status, body) = c.call("GET", "/readyz", None, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "readyz while RabbitMQ is down: {body}");
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped_at.elapsed())).await;
        c.assert_processes_alive();
        services.start_rabbitmq().await;

        // The same processes reconnect: the gateway is ready again, both workers consume.
        let start = Instant::now();
        while c.try_call("GET", "/readyz", None, None).await.map(|(s, _)| s).ok() != Some(StatusCode::OK) {
            assert!(start.elapsed() < WAIT, "the gateway did not reconnect\n{}", c.procs.gateway.process.tail(20));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let names: Vec<String> = (0..2).map(|i| format!("worker-{i}-{}", c.env.prefix())).collect();
        let start = Instant::now();
        loop {
            let mut tags = Vec::new();
            for queue in c.topology.partitions() {
                tags.push(consumer_tags(&queue).await);
            }
            if tags.iter().all(|on| names.iter().all(|n| on.iter().any(|t| t.starts_with(n.as_str())))) {
                break;
            }
            assert!(start.elapsed() < WAIT, "workers did not all reconnect: consumers {tags:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let after_sent = w.send(&c, after, 8, &AtomicUsize::new(0)).await;
        assert_all_accepted(&after_sent);
        sent.extend(after_sent);
        let tally = verify(&c, &w, &sent, Extra::default()).await;
        let republished = c.republished().len();
        c.assert_processes_alive();
        summary(
            "rabbitmq",
            &c,
            &w,
            &tally,
            0,
            &format!("sent_during_outage={during} republished={republished}"),
            started,
        );
        c.teardown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_retry_through_a_mongod_restart_and_finish_the_work() {
    fault_test("mongod", async {
        let started = Instant::now();
        let mut services = Services::default();
        let mut c = Cluster::start("mongod", 1).await;
        let mut w = Workload::setup(&c).await;
        // Queue the transfers first, so that plenty is in flight when mongod stops.
        let status = stop(&mut c.procs.workers[0].process).await;
        assert!(status.success(), "worker-0 stopped cleanly: {status}");
        let plan = w.plan(300, "mongo");
        let sent = w.send(&c, &plan, 16, &AtomicUsize::new(0)).await;
        assert_all_accepted(&sent);
        c.spawn_worker("worker-a", 16);
        c.spawn_worker("worker-b", 16);
        wait_progress(&c, ACCOUNTS as u64 + 40).await;

        let pending_at_stop = (ACCOUNTS + plan.len()) as u64 - c.count_terminal().await.unwrap();
        assert!(pending_at_stop > 0, "the workers had finished before mongod stopped");
        services.stop_mongod().await;
        let stopped_at = Instant::now();
        // Requests meanwhile are answered 503, not left hanging, and record nothing.
        let probes: Vec<Planned> =
            (0..4).map(|i| Planned { from: i, to: i + 1, amount: 1, key: format!("probe-{i}") }).collect();
        let answers = futures::future::join_all(probes.iter().map(|p| async {
            match tokio::time::timeout(HTTP_LIMIT, w.send_one(&c, p)).await {
                Ok(sent) => sent,
                Err(_) => panic!("{} not answered within {HTTP_LIMIT:?} while mongod is down", p.key),
            }
        }))
        .await;
        for s in &answers {
            let code = s.answer.as_ref().ok().map(|(status, b)| (*status, b["error"]["code"].clone()));
            let ok = code == Some((StatusCode::SERVICE_UNAVAILABLE, json!("SERVICE_UNAVAILABLE")));
            assert!(ok, "{} while mongod is down: {:?}", s.plan.key, s.answer);
        }
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped_at.elapsed())).await;
        c.assert_processes_alive();
        services.start_mongod().await;
        let outage = stopped_at.elapsed();

        let tally = verify(&c, &w, &sent, Extra::default()).await;
        c.assert_processes_alive();
        let more = format!("pending_at_stop={pending_at_stop} outage={:.1}s", outage.as_secs_f64());
        summary("mongod", &c, &w, &tally, 0, &more, started);
        c.teardown().await;
    })
    .await;
}

/// Bound on one HTTP request while the database is down: the driver gives up selecting a
/// server after 5 s, and the gateway answers 503.
const HTTP_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_confirm_is_lost_is_republished_and_applied_once() {
    fault_test("lost_confirm", async {
        let started = Instant::now();
        let mut c = Cluster::start_behind_proxy("confirm", 2).await;
        let mut w = Workload::setup(&c).await;
        // Transfers go in waves of 40, of three kinds in turn. Plain: no fault. Confirm lost:
        // one transfer (the gateway reconnects after the last cut), then the broker's replies
        // are held while the other 39 go in at once, and after 400 ms the connection is cut:
        // what the gateway published meanwhile reached the broker, but its confirm is lost.
        // Blackout: a cut, and new connections fail for 200 ms, so the gateway cannot
        // reconnect and the wave is answered 503 without being sent, for the republisher.
        let plan = w.plan(360, "confirm");
        let proxy = c.proxy.as_ref().unwrap();
        let (mut sent, mut cuts) = (Vec::new(), 0);
        for (i, wave) in plan.chunks(40).enumerate() {
            let wave = match i % 3 {
                0 => wave,
                1 => {
                    sent.extend(w.send(&c, &wave[..1], 1, &AtomicUsize::new(0)).await);
                    proxy.hold_replies();
                    &wave[1..]
                }
                _ => {
                    cuts += usize::from(proxy.cut(Duration::from_millis(200)) > 0);
                    wave
                }
            };
            let cut = async {
                if i % 3 == 1 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    cuts += usize::from(proxy.cut(Duration::ZERO) > 0);
                }
            };
            let answered = AtomicUsize::new(0);
            let (wave_sent, ()) = tokio::join!(w.send(&c, wave, wave.len(), &answered), cut);
            sent.extend(wave_sent);
            if i == 8 {
                break;
            }
            // Past the publisher's reconnect cooldown (500 ms), so the next wave publishes.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let deferred: Vec<&Sent> = sent.iter().filter(|s| s.deferred()).collect();
        assert!(cuts > 0, "the gateway never had a broker connection to cut");
        assert!(
            !deferred.is_empty(),
            "no publish lost its confirm in {cuts} connection cuts: the fault did not happen"
        );
        for s in &sent {
            let ok = s.status() == Some(StatusCode::ACCEPTED) || s.deferred();
            assert!(ok, "{}: {:?}", s.plan.key, s.answer);
        }

        let tally = verify(&c, &w, &sent, Extra::default()).await;
        // A client retrying after the 503 gets the recorded transaction back, not a new one.
        for s in &deferred {
            let (status, body) =
                c.call("POST", "/transactions", Some(&w.users[s.plan.from].token), Some(w.body(&s.plan))).await;
            assert_eq!(status, StatusCode::OK, "retry of {}: {body}", s.plan.key);
            assert_eq!(body["transaction"]["id"].as_str(), s.recorded_id().as_deref(), "retry of {}", s.plan.key);
        }
        // A deferred transfer the republisher did not send completed from its first publish:
        // the broker had it, only the confirm was lost.
        let ids: HashSet<String> = deferred.iter().filter_map(|s| s.recorded_id()).collect();
        let republished = c.republished().intersection(&ids).count();
        assert!(republished > 0, "the republisher sent none of the {} deferred transfers", ids.len());
        assert!(
            republished < ids.len(),
            "every deferred transfer needed the republisher: no cut lost the confirm of a delivered publish"
        );
        c.assert_processes_alive();
        summary(
            "lost_confirm",
            &c,
            &w,
            &tally,
            0,
            &format!(
                "connection_cuts={cuts} republished={republished} delivered_without_confirm={}",
                ids.len() - republished
            ),
            started,
        );
        c.teardown().await;
    })
    .await;
}

/// The hostile part of the flood: every one must be dead-lettered with an INVALID_COMMAND
/// result, and none may create a transaction or move money.
fn hostile_messages(w: &Workload, from: &str, to: &str, n: usize) -> Vec<Vec<u8>> {
    let good = |key: &str| {
        json!({
            "version": 1,
            "kind": "TRANSFER",
            "fromAccount": from,
            "toAccount": to,
            "amount": 10,
            "currency": "USD",
            "idempotencyKey": key,
            "initiator": "service:test-upstream",
            "requestedAt": chrono::Utc::now().to_rfc3339(),
        })
    };
    let with = |i: usize, field: &str, value: Value| {
        let mut c = good(&format!("hostile-{i}"));
        c[field] = value;
        serde_json::to_vec(&c).unwrap()
    };
    let mut out: Vec<Vec<u8>> = (0..n)
        .map(|i| match i % 23 {
            0 => format!("not json {i}").into_bytes(),
            1 => Vec::new(),
            2 => format!("[{i},2,3]").into_bytes(),
            3 => b"null".to_vec(),
            4 => vec![0xff, 0xfe, 0x00, i as u8],
            5 => with(i, "amount", json!(-(i as i64) - 1)),
            6 => with(i, "amount", json!(0)),
            7 => with(i, "amount", json!(12.5)),
            8 => with(i, "amount", json!("10")),
            9 => with(i, "amount", json!(10_000_000_000_000_000_i64)),
            10 => with(i, "amount", json!(u64::MAX)),
            11 => with(i, "version", json!(99)),
            12 => with(i, "toAccount", json!({"$ne": null})),
            13 => with(i, "fromAccount", Value::Null),
            14 => with(i, "currency", json!("DOGE")),
            15 => with(i, "toAccount", json!(from)),
            // A user initiator without a recorded transaction: acting in someone's name.
            16 => with(i, "initiator", json!(w.users[0].id)),
            17 => with(i, "kind", json!("STEAL")),
            18 => with(i, "requestedAt", json!("yesterday")),
            19 => with(i, "idempotencyKey", json!("k".repeat(200))),
            // Names a transaction that does not exist.
            20 => with(i, "transactionId", json!(uuid::Uuid::now_v7().to_string())),
            21 => format!("{{\"version\":1,\"amount\":1e400,\"idempotencyKey\":\"hostile-{i}\"}}").into_bytes(),
            _ => with(i, "amount", json!(1_000_000_000_000_001_i64)),
        })
        .collect();
    // And the big ones: 1 MB of JSON, 1 MB of garbage, and JSON nested 8,000 deep.
    for i in 0..3 {
        out.push(format!("{{\"version\":1,\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(1 << 20)).into_bytes());
        out.push(vec![0xab_u8.wrapping_add(i); 1 << 20]);
        out.push(format!("{}{}", "[".repeat(8_000 + usize::from(i)), "]".repeat(8_000 + usize::from(i))).into_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hostile_messages_is_dead_lettered_while_every_good_one_completes() {
    fault_test("flood", async {
        let started = Instant::now();
        let mut c = Cluster::start("flood", 1).await;
        let mut w = Workload::setup(&c).await;
        // Upstream commands move money between two accounts of their own.
        let ((_, src), (_, dst)) = (c.user_with_account().await, c.user_with_account().await);
        let src_funding = c.request_funding(&src, 100_000).await;
        c.wait_terminal(&[src_funding], WAIT).await;

        let upstream = |key: &str, to: &str, amount: i64| {
            serde_json::to_vec(&json!({
                "version": 1,
                "kind": "TRANSFER",
                "fromAccount": src,
                "toAccount": to,
                "amount": amount,
                "currency": "USD",
                "idempotencyKey": key,
                "initiator": "service:test-upstream",
                "requestedAt": chrono::Utc::now().to_rfc3339(),
            }))
            .unwrap()
        };
        let good: Vec<(String, i64)> =
            (0..50).map(|i| (format!("upstream-{i}"), 1 + w.rng.below(999) as i64)).collect();
        // Well-formed but naming an account that does not exist: not malformed, so these FAIL
        // with ACCOUNT_NOT_FOUND like any transfer, rather than being dead-lettered.
        let ghosts: Vec<String> = (0..10).map(|i| format!("ghost-{i}")).collect();
        let hostile = hostile_messages(&w, &src, &dst, 140);

        let mut flood: Vec<Vec<u8>> = hostile.clone();
        flood.extend(good.iter().map(|(key, amount)| upstream(key, &dst, *amount)));
        flood.extend(ghosts.iter().map(|key| upstream(key, &uuid::Uuid::now_v7().to_string(), 5)));
        for i in (1..flood.len()).rev() {
            flood.swap(i, w.rng.below(i as u64 + 1) as usize);
        }

        // The flood goes in while transfers come through the gateway.
        let plan = w.plan(150, "flood");
        let publish = async {
            for chunk in flood.chunks(20) {
                let messages: Vec<(String, Vec<u8>)> = chunk.iter().map(|b| (src.clone(), b.clone())).collect();
                c.publish_raw(&messages).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let answered = AtomicUsize::new(0);
        let (sent, ()) = tokio::join!(w.send(&c, &plan, 8, &answered), publish);
        assert_all_accepted(&sent);
        // And tampered copies of real gateway commands (same id, initiator and key; more money).
        let mut tampered = Vec::new();
        for s in sent.iter().take(10) {
            let id = s.recorded_id().unwrap();
            let record = c.store.find_transaction(id.parse().unwrap()).await.unwrap().unwrap();
            let mut cmd: Value = serde_json::from_slice(&record.to_command().to_json()).unwrap();
            cmd["amount"] = json!(999_999);
            tampered.push(serde_json::to_vec(&cmd).unwrap());
        }
        // Published as the gateway's broker user: the worker's check against the record, not
        // the publisher's identity, is what this tests (an outsider's copy is refused earlier,
        // see tests/e2e/services.rs).
        let tampered_messages = tampered.iter().map(|b| (src.clone(), b.clone())).collect::<Vec<_>>();
        c.publish_raw_as(ledgerflow_tests::GATEWAY_BROKER_USER, &tampered_messages).await;

        // Every bad message, and only those, is dead-lettered.
        let mut bad: Vec<Vec<u8>> = hostile.iter().chain(&tampered).cloned().collect();
        let expected_dead = bad.len();
        let mut dead = c.drain(&c.topology.dead_letters(), WAIT, |got| got.len() >= expected_dead).await;
        bad.sort();
        dead.sort();
        assert_eq!(dead.len(), bad.len(), "dead letters: {} of the {} bad messages", dead.len(), bad.len());
        assert!(dead == bad, "the dead-letter queue holds exactly the bad messages");

        // Every good upstream command completed, every ghost failed, once.
        let initiator = "service:test-upstream".parse().unwrap();
        let mut upstream_records: Vec<TransactionRecord> = Vec::new();
        for key in good.iter().map(|(k, _)| k).chain(&ghosts) {
            let start = Instant::now();
            let record = loop {
                let found = c.store.find_by_key(&initiator, &key.parse().unwrap()).await.unwrap();
                if let Some(t) = found.filter(|t| t.status.is_decided()) {
                    break t;
                }
                assert!(start.elapsed() < WAIT, "upstream command {key} not terminal in time");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            upstream_records.push(record);
        }
        let mut moved = 0;
        for (t, (key, amount)) in upstream_records.iter().zip(&good) {
            assert_eq!((t.status.as_str(), t.amount.minor()), ("COMPLETED", *amount), "{key}: {t:?}");
            assert_eq!(c.store.entries_of_transaction(t.id).await.unwrap().len(), 2, "{key}");
            moved += amount;
        }
        for (t, key) in upstream_records[good.len()..].iter().zip(&ghosts) {
            assert_eq!(
                (t.status.as_str(), t.failure_reason.map(|r| r.as_str())),
                ("FAILED", Some("ACCOUNT_NOT_FOUND")),
                "{key}"
            );
        }
        assert_eq!(c.store.balance(src.parse().unwrap()).await.unwrap().minor(), 100_000 - moved);
        assert_eq!(c.store.balance(dst.parse().unwrap()).await.unwrap().minor(), moved);

        let extra = Extra {
            transactions: 1 + upstream_records.len(),
            result_ids: upstream_records.iter().map(|t| t.id.to_string()).collect(),
        };
        let tally = verify(&c, &w, &sent, extra).await;
        // One FAILED result per bad message: a malformed one is an invalid command, a tampered
        // copy a reuse of the recorded transaction's key with another request.
        let failed_with = |reason: &str| tally.results.iter().filter(|r| r["failureReason"] == reason).count();
        // Those naming a recorded transaction come from no LedgerFlow process: UNAUTHORIZED.
        let naming_a_transaction = hostile
            .iter()
            .filter(|b| serde_json::from_slice::<Value>(b).is_ok_and(|v| v.get("transactionId").is_some()))
            .count();
        assert_eq!(failed_with("UNAUTHORIZED"), naming_a_transaction, "one UNAUTHORIZED per message naming one");
        assert_eq!(
            failed_with("INVALID_COMMAND"),
            hostile.len() - naming_a_transaction,
            "one INVALID_COMMAND result per malformed message"
        );
        assert_eq!(
            failed_with("IDEMPOTENCY_KEY_REUSED"),
            tampered.len(),
            "one IDEMPOTENCY_KEY_REUSED per tampered copy"
        );
        c.assert_processes_alive();
        summary(
            "flood",
            &c,
            &w,
            &tally,
            dead.len(),
            &format!(
                "hostile={} tampered={} upstream_completed={} unknown_account_failed={}",
                hostile.len(),
                tampered.len(),
                good.len(),
                ghosts.len()
            ),
            started,
        );
        c.teardown().await;
    })
    .await;
}
