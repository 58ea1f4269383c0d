//! What every fault test checks once the fault is over: the invariants of the module
//! documentation of `main.rs`, and the `FAULTS` summary line.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use ledgerflow_domain::EventType;
use ledgerflow_store::{EventFilter, EventRecord, TransactionRecord};
use ledgerflow_tests::processes::Cluster;
use ledgerflow_tests::receiver::Receiver;
use ledgerflow_tests::serde_json::{Value, json};

use crate::workload::{ACCOUNTS, FUNDING, Planned, Sent, WAIT, Workload};

/// What the test made besides the workload's funding and transfers.
#[derive(Default)]
pub struct Extra {
    /// Transactions created otherwise (e.g. by upstream commands).
    pub transactions: usize,
    /// Their ids, which must have results too.
    pub result_ids: Vec<String>,
}

/// What [`verify`] counted.
pub struct Tally {
    pub accepted: usize,
    pub deferred: usize,
    pub completed: usize,
    pub failed: usize,
    /// Results beyond the first for the same transaction.
    pub duplicate_results: usize,
    pub results: Vec<Value>,
}

/// Checks every invariant of the module documentation for the transfers in `sent`.
pub async fn verify(c: &Cluster, w: &Workload, sent: &[Sent], extra: Extra) -> Tally {
    let mut tracked: Vec<(&Planned, String)> = Vec::new();
    let (mut accepted, mut deferred) = (0, 0);
    for s in sent {
        match (&s.answer, s.recorded_id()) {
            (Ok(_), Some(id)) if s.accepted() => {
                accepted += 1;
                tracked.push((&s.plan, id));
            }
            (Ok(_), Some(id)) => {
                deferred += 1;
                tracked.push((&s.plan, id));
            }
            (Ok((status, body)), None) => panic!("transfer {} answered {status}: {body}", s.plan.key),
            (Err(e), _) => panic!("transfer {} got no answer (a hang or a broken connection): {e}", s.plan.key),
        }
    }

    let ids: Vec<String> = tracked.iter().map(|(_, id)| id.clone()).collect();
    let records = c.wait_terminal(&ids, WAIT).await;
    let (mut completed, mut failed) = (0, 0);
    let mut expected = [FUNDING; ACCOUNTS];
    for ((p, id), t) in tracked.iter().zip(&records) {
        let what = format!("transfer {} ({id}: {} → {}, {})", p.key, p.from, p.to, p.amount);
        assert_eq!(t.id.to_string(), *id);
        assert_eq!(
            (t.from_account.to_string(), t.to_account.to_string(), t.amount.minor()),
            (w.accounts[p.from].clone(), w.accounts[p.to].clone(), p.amount),
            "{what}: recorded as {t:?}"
        );
        let entries = c.store.entries_of_transaction(t.id).await.unwrap();
        if p.covered() {
            assert_eq!(t.status.as_str(), "COMPLETED", "{what}: {:?} {:?}", t.status, t.failure_reason);
            let mut got: Vec<(String, String, i64)> = entries
                .iter()
                .map(|e| (e.entry_type.as_str().to_owned(), e.account_id.to_string(), e.amount.minor()))
                .collect();
            got.sort();
            let mut want = vec![
                ("DEBIT".to_owned(), w.accounts[p.from].clone(), p.amount),
                ("CREDIT".to_owned(), w.accounts[p.to].clone(), p.amount),
            ];
            want.sort();
            assert_eq!(got, want, "{what}: exactly one DEBIT and one CREDIT");
            expected[p.from] -= p.amount;
            expected[p.to] += p.amount;
            completed += 1;
        } else {
            assert_eq!(
                (t.status.as_str(), t.failure_reason.map(|r| r.as_str())),
                ("FAILED", Some("INSUFFICIENT_FUNDS")),
                "{what}"
            );
            assert!(entries.is_empty(), "{what}: a FAILED transfer has no entries: {entries:?}");
            failed += 1;
        }
    }

    for (i, account) in w.accounts.iter().enumerate() {
        let balance = c.store.balance(account.parse().unwrap()).await.unwrap().minor();
        assert_eq!(balance, expected[i], "balance of account {i}: the completed transfers, each once");
        assert!(balance >= 0, "account {i} is overdrawn: {balance}");
    }

    let (code, report) = c.reconcile(&["--max-pending-age", "1h"]).await;
    assert_eq!((code, &report["ok"]), (0, &json!(true)), "reconcile: {report}");
    assert_eq!(
        report["transactions"],
        json!(ACCOUNTS + tracked.len() + extra.transactions),
        "no transaction missing and none extra: {report}"
    );

    // Results: at least one per transaction, with its final status.
    let mut want: HashSet<String> = ids.iter().cloned().collect();
    want.extend(extra.result_ids.iter().cloned());
    let parse = |bodies: &[Vec<u8>]| -> Vec<Value> {
        bodies.iter().map(|b| serde_json::from_slice(b).unwrap_or(Value::Null)).collect()
    };
    let bodies = c
        .drain(&c.topology.results(), WAIT, |got| {
            let seen: HashSet<String> =
                parse(got).iter().filter_map(|r| r["transactionId"].as_str().map(str::to_owned)).collect();
            want.is_subset(&seen)
        })
        .await;
    let results = parse(&bodies);
    let mut per_id: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in &results {
        if let Some(id) = r["transactionId"].as_str() {
            per_id.entry(id).or_default().push(r);
        }
    }
    for t in &records {
        let id = t.id.to_string();
        let mine = per_id.get(id.as_str()).unwrap_or_else(|| panic!("no result was published for {id} ({t:?})"));
        assert!(mine.iter().all(|r| r["status"] == t.status.as_str()), "results for {id} contradict {t:?}: {mine:?}");
    }
    for id in &extra.result_ids {
        assert!(per_id.contains_key(id.as_str()), "no result was published for {id}");
    }
    let duplicate_results = per_id.values().map(|v| v.len() - 1).sum();
    verify_events(c, &records).await;
    Tally { accepted, deferred, completed, failed, duplicate_results, results }
}

pub fn summary(test: &str, c: &Cluster, w: &Workload, t: &Tally, dead_lettered: usize, more: &str, started: Instant) {
    println!(
        "FAULTS {test}: accepted={} deferred_503={} completed={} failed={} dead_lettered={dead_lettered} \
         redelivered={} retried={} duplicate_results={} {more} seed={} in {:.1}s",
        t.accepted,
        t.deferred,
        t.completed,
        t.failed,
        c.redelivered(),
        c.retried(),
        t.duplicate_results,
        w.seed,
        started.elapsed().as_secs_f64()
    );
}

/// Waits until `count_terminal` reaches `n` (the workers are under way).
pub async fn wait_progress(c: &Cluster, n: u64) {
    let start = Instant::now();
    while c.count_terminal().await.unwrap_or(0) < n {
        assert!(
            start.elapsed() < WAIT,
            "the workers made no progress\n{}",
            c.procs.workers.last().unwrap().process.tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The event stream: every tracked transaction has exactly two events, its acceptance and its
/// decision (no change without its event, none twice), and the relay numbered and published
/// every one of them, whichever process the fault hit.
async fn verify_events(c: &Cluster, records: &[TransactionRecord]) {
    let start = Instant::now();
    loop {
        let (outbox, unpublished) = c.store.relay_backlog().await.unwrap();
        if (outbox, unpublished) == (0, 0) {
            break;
        }
        assert!(start.elapsed() < WAIT, "the relay is stuck: {outbox} events unnumbered, {unpublished} unpublished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut per_transaction: HashMap<String, Vec<EventType>> = HashMap::new();
    for event in every_event(c).await {
        per_transaction.entry(event.transaction_id.to_string()).or_default().push(event.event_type);
    }
    for t in records {
        let got = per_transaction.get(&t.id.to_string()).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got, [EventType::Accepted, EventType::entering(t.status)], "the events of {t:?}");
    }
}

/// Every event of the stream reached RabbitMQ (on `tap`, bound before the first) and the
/// webhook `receiver` (registered for everything before the first), at least once each.
/// Returns the counts for the summary line.
pub async fn verify_published_and_delivered(c: &Cluster, tap: &str, receiver: &Receiver) -> String {
    let ids: BTreeSet<i64> = every_event(c).await.iter().map(|e| e.id).collect();
    let published = |bodies: &[Vec<u8>]| -> BTreeSet<i64> {
        bodies.iter().filter_map(|b| serde_json::from_slice::<Value>(b).ok()?["id"].as_i64()).collect()
    };
    let bodies = c.drain(tap, WAIT, |got| ids.is_subset(&published(got))).await;
    let seen = published(&bodies);
    let missing: Vec<_> = ids.difference(&seen).take(10).collect();
    assert!(missing.is_empty(), "{} events, never published: {missing:?}…", ids.len());
    receiver.wait_for(&ids, WAIT).await;
    let delivered = receiver.event_ids();
    format!(
        "events={} published={} delivered={} redelivered_events={}",
        ids.len(),
        bodies.len(),
        delivered.len(),
        delivered.len() - delivered.iter().collect::<BTreeSet<_>>().len()
    )
}

/// Every numbered event the store holds, oldest first, read a page at a time.
async fn every_event(c: &Cluster) -> Vec<EventRecord> {
    let mut events: Vec<EventRecord> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.id);
        let page = c.store.events_after(&EventFilter { after, limit: 100, ..EventFilter::default() }).await.unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}
