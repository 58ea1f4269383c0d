//! Clustered services losing a node: the RabbitMQ node that leads the partition queues, and
//! the MongoDB primary, each SIGKILLed in the middle of a stream of transfers. Unlike the
//! other fault tests, these never touch the shared services: each starts a cluster of its own
//! (`ledgerflow_tests::nodes`) whose guard kills it when the test ends, pass or fail.
//!
//! The client behaves as a careful one does: a transfer answered 503 without being recorded,
//! or not answered at all, is sent again under the same idempotency key until it is accepted
//! (a 200 then means the first try had been recorded after all); a 503 `BROKER_UNAVAILABLE`
//! is recorded and left to the republisher. Then the invariants of `main.rs` are checked
//! ([`verify`]), and the `FAULTS` line gives `recovery=`: the time from the kill to the first
//! transfer, sent after it, that was accepted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ledgerflow_tests::amqp_uri;
use ledgerflow_tests::mongodb_uri;
use ledgerflow_tests::nodes::{MongoReplicaSet, RabbitCluster};
use ledgerflow_tests::processes::Cluster;
use reqwest::StatusCode;

use crate::verify::{Extra, summary, verify};
use crate::workload::{Planned, Sent, WAIT, Workload};

/// Upper bound for a whole cluster test, whatever hangs: starting the nodes included.
const CLUSTER_TEST_LIMIT: Duration = Duration::from_secs(150);
/// Transfers in the stream, and how many are answered before the kill.
const TRANSFERS: usize = 300;
/// Transfers sent one at a time after the stream, as long as none sent after the kill has
/// been accepted, so that the recovery is measured however long it takes (within `WAIT`).
const RESERVE: usize = 100;
const RESERVE_PACE: Duration = Duration::from_millis(100);
const KILL_AFTER: usize = 100;
/// One transfer starts every `PACE`, at most `IN_FLIGHT` at a time.
const PACE: Duration = Duration::from_millis(20);
const IN_FLIGHT: usize = 16;
/// A transfer refused without being recorded is sent again after this pause…
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// …until it is accepted, or this long after its first try.
const ACCEPT_LIMIT: Duration = Duration::from_secs(45);
/// What `ledgerflow_messaging::connect` logs when it skipped a broker of the list.
const MOVED_ON: &str = "connected to a later broker of the list";

async fn cluster_test(name: &str, test: impl Future<Output = ()>) {
    let _turn = crate::SERIAL.lock().await;
    if tokio::time::timeout(CLUSTER_TEST_LIMIT, test).await.is_err() {
        panic!("cluster fault test {name} did not finish within {CLUSTER_TEST_LIMIT:?}");
    }
}

/// One try of one transfer.
struct Attempt {
    sent_at: Instant,
    answered_at: Instant,
    accepted: bool,
}

/// What a stream through a kill saw.
struct Streamed {
    sent: Vec<Sent>,
    /// Tries beyond the first, over all transfers.
    retries: usize,
    /// From the kill to the first transfer sent after it and accepted.
    recovery: Duration,
}

/// Sends the first [`TRANSFERS`] of `plan` at a steady pace (see [`until_recorded`] for each
/// transfer), runs `kill` once [`KILL_AFTER`] are answered, and then, until one sent after the
/// kill is accepted, the rest of `plan` one by one.
async fn stream_through_kill(c: &Cluster, w: &Workload, plan: &[Planned], kill: impl Future<Output = ()>) -> Streamed {
    let (stream, reserve) = plan.split_at(TRANSFERS);
    let attempts = Mutex::new(Vec::new());
    let answered = AtomicUsize::new(0);
    let killed_at = Mutex::new(None::<Instant>);
    let pace = Instant::now();
    let (attempts_r, answered_r) = (&attempts, &answered);
    let send = futures::stream::iter(stream.iter().enumerate())
        .map(|(i, p)| async move {
            tokio::time::sleep_until((pace + PACE * u32::try_from(i).unwrap_or(u32::MAX)).into()).await;
            let sent = until_recorded(c, w, p, attempts_r).await;
            answered_r.fetch_add(1, Ordering::SeqCst);
            sent
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<Sent>>();
    let killer = async {
        while answered.load(Ordering::SeqCst) < KILL_AFTER {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        *killed_at.lock().unwrap() = Some(Instant::now());
        kill.await;
    };
    let (mut sent, ()) = tokio::join!(send, killer);
    let killed_at = killed_at.into_inner().unwrap().unwrap();
    let recovered =
        |attempts: &Mutex<Vec<Attempt>>| attempts.lock().unwrap().iter().any(|a| a.accepted && a.sent_at >= killed_at);
    for p in reserve {
        if recovered(&attempts) || killed_at.elapsed() > WAIT {
            break;
        }
        sent.push(until_recorded(c, w, p, &attempts).await);
        tokio::time::sleep(RESERVE_PACE).await;
    }
    let attempts = attempts.into_inner().unwrap();
    let recovery = attempts
        .iter()
        .filter(|a| a.accepted && a.sent_at >= killed_at)
        .map(|a| a.answered_at - killed_at)
        .min()
        .unwrap_or_else(|| panic!("no transfer sent within {WAIT:?} of the kill was accepted"));
    Streamed { retries: attempts.len() - sent.len(), sent, recovery }
}

/// Sends one transfer until the gateway records it: a 503 that recorded nothing, or no answer
/// (a timeout, a broken connection), is tried again under the same key; any other answer is
/// final, and [`verify`] judges it.
async fn until_recorded(c: &Cluster, w: &Workload, p: &Planned, attempts: &Mutex<Vec<Attempt>>) -> Sent {
    let first = Instant::now();
    loop {
        let sent_at = Instant::now();
        let sent = w.send_one(c, p).await;
        let answered_at = Instant::now();
        attempts.lock().unwrap().push(Attempt { sent_at, answered_at, accepted: sent.accepted() });
        let unrecorded =
            sent.recorded_id().is_none() && matches!(&sent.answer, Ok((StatusCode::SERVICE_UNAVAILABLE, _)) | Err(_));
        if !unrecorded || first.elapsed() >= ACCEPT_LIMIT {
            return sent;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The processes of `c` that logged moving on to a later broker of the list.
fn moved_on(c: &Cluster) -> Vec<String> {
    c.procs
        .processes()
        .filter(|p| p.log_events().iter().any(|e| e["fields"]["message"] == MOVED_ON))
        .map(|p| p.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_node_leading_the_partitions_dies_and_nothing_is_lost_or_doubled() {
    cluster_test("rabbitmq_cluster", async {
        let started = Instant::now();
        // No policy: every queue the processes need is a quorum queue, so none lives only on
        // the node killed below. (Earlier versions' classic retry queues, which they still
        // declare there for a rolling upgrade, die with it and stop nothing: docs/operations.md,
        // "A RabbitMQ cluster".)
        let mut rabbit = RabbitCluster::start(3).await.unwrap_or_else(|e| panic!("{e:#}"));
        let formed = started.elapsed();
        let mut c = Cluster::start_on("rmq-cluster", 2, &mongodb_uri(), &rabbit.uri_list()).await;
        c.procs.wait_for_workers(Instant::now() + WAIT).await.unwrap();
        let mut w = Workload::setup(&c).await;

        // Every queue has a replica on each node, and every partition its leader on the node
        // the processes reached first (a quorum queue's leader is placed on the declaring node).
        let nodes: Vec<String> = rabbit.nodes.iter().map(|n| n.node.clone()).collect();
        let queues = rabbit.queues(1, c.env.prefix()).await.unwrap();
        let t = &c.topology;
        let shared = [t.retry(), t.roster(), t.results(), t.dead_letters(), t.expired()];
        let partitions = t.partitions();
        let mut leaders = Vec::new();
        for name in partitions.iter().cloned().chain(shared) {
            let q = queues.iter().find(|q| q.name == name).unwrap_or_else(|| panic!("no queue {name}: {queues:?}"));
            let mut members = q.members.clone();
            members.sort();
            assert_eq!(members, nodes, "{name} is replicated on every node");
            if partitions.contains(&name) {
                leaders.push(q.leader.clone());
            }
        }
        assert!(leaders.iter().all(|l| *l == leaders[0]), "partition leaders on one node: {leaders:?}");
        let victim = rabbit.index_of(&leaders[0]).unwrap_or_else(|| panic!("leader {} is no node", leaders[0]));

        let plan = w.plan(TRANSFERS + RESERVE, "rmqc");
        let streamed = stream_through_kill(&c, &w, &plan, async { rabbit.kill(victim).await.unwrap() }).await;

        // The partitions elected leaders among the survivors; every process moved on.
        let survivor = (victim + 1) % nodes.len();
        let queues = rabbit.queues(survivor, c.env.prefix()).await.unwrap();
        for name in c.topology.partitions() {
            let leader = queues.iter().find(|q| q.name == name).map(|q| q.leader.clone());
            assert!(leader.as_ref().is_some_and(|l| *l != nodes[victim] && !l.is_empty()), "{name}: leader {leader:?}");
        }
        let tally = verify(&c, &w, &streamed.sent, Extra::default()).await;
        let moved = moved_on(&c);
        let names: Vec<String> = c.procs.processes().map(|p| p.name.clone()).collect();
        assert_eq!(moved, names, "every process moved on to a live broker of the list");
        c.assert_processes_alive();
        let more = format!(
            "killed={} recovery={:.2}s retries={} moved_on={} cluster_formed_in={:.1}s",
            nodes[victim],
            streamed.recovery.as_secs_f64(),
            streamed.retries,
            moved.join(","),
            formed.as_secs_f64()
        );
        summary("rabbitmq_cluster", &c, &w, &tally, 0, &more, started);
        c.teardown_keeping_queues().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mongodb_primary_dies_and_nothing_is_lost_or_doubled() {
    cluster_test("mongodb_replica_set", async {
        let started = Instant::now();
        let mut set = MongoReplicaSet::start(3).await.unwrap_or_else(|e| panic!("{e:#}"));
        let formed = started.elapsed();
        let mut c = Cluster::start_on("mongo-rs", 2, &set.uri(), &amqp_uri()).await;
        c.procs.wait_for_workers(Instant::now() + WAIT).await.unwrap();
        let mut w = Workload::setup(&c).await;

        let primary = set.primary().await.expect("the replica set has a primary");
        let plan = w.plan(TRANSFERS + RESERVE, "mrs");
        let streamed = stream_through_kill(&c, &w, &plan, async { set.kill(primary).unwrap() }).await;

        let start = Instant::now();
        let elected = loop {
            if let Some(i) = set.primary().await {
                break i;
            }
            assert!(start.elapsed() < WAIT, "no new primary elected\n{}", set.tails(20));
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_ne!(elected, primary, "the killed member is not primary");
        let tally = verify(&c, &w, &streamed.sent, Extra::default()).await;
        c.assert_processes_alive();
        let more = format!(
            "killed=member-{primary} elected=member-{elected} recovery={:.2}s retries={} replica_set_formed_in={:.1}s",
            streamed.recovery.as_secs_f64(),
            streamed.retries,
            formed.as_secs_f64()
        );
        summary("mongodb_replica_set", &c, &w, &tally, 0, &more, started);
        c.teardown().await;
    })
    .await;
}
