//! Holds through a worker crash (issue 28's proof): clients open holds and post them (in
//! whole or in part), void them, race a post against a void or against the expiry, or leave
//! short ones to expire, among plain transfers on the same accounts, while one of the two
//! workers is frozen and SIGKILLed. The other takes over its partitions, its redelivered
//! commands and the expiry of every hold. Then:
//!
//! - every transaction is decided, and nothing is PENDING in the database;
//! - every hold ends in exactly one of POSTED, VOIDED or EXPIRED (FAILED if never covered),
//!   none stays HELD past its expiry, and each POSTED or VOIDED hold has exactly one COMPLETED
//!   settlement, the one it names; an EXPIRED hold has none and expired no earlier than its time;
//! - each step ends as its plan dictates: every account is funded well beyond what it sends,
//!   so a covered transfer completes and a covered hold is HELD whatever the order;
//! - every balance, pendingDebits, pendingCredits and available is exactly what the final
//!   states imply, the money moved by a hold counted from the hold (`postedAmount`), so that a
//!   second settlement's entries would show;
//! - `ledgerflow reconcile` passes and counts exactly the transactions and entries made.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ledgerflow_client::{Client, Transfer};
use ledgerflow_store::TransactionRecord;
use ledgerflow_tests::Session;
use ledgerflow_tests::processes::Cluster;
use ledgerflow_tests::serde_json::json;

use crate::fault_test;
use crate::workload::{ACCOUNTS, FUNDING, Rng, UNCOVERED, WAIT, Workload};

/// Clients at once, each sending from one account (two per account), and steps each.
const CLIENTS: usize = 16;
const STEPS: usize = 12;
/// A hold its client settles: long enough never to expire during the test.
const LONG_HOLD_SECONDS: u32 = 300;
/// The longest any one transaction may take to be decided, the outage included (a killed
/// worker's open MongoDB transactions keep their documents locked for mongod's
/// transactionLifetimeLimitSeconds, 10 s on the test services).
const DECIDE_LIMIT: Duration = Duration::from_secs(40);
/// How long past its `expiresAt` a hold may stay HELD before the test fails.
const EXPIRY_LIMIT: Duration = Duration::from_secs(30);
/// A PENDING transaction this old is stuck behind the frozen worker (a live one decides in
/// milliseconds).
const STUCK_AFTER: Duration = Duration::from_secs(1);

/// What one step of a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Transfer,
    /// A long hold, posted whole.
    PostAll,
    /// A long hold, posted in part (the rest released).
    PostPart,
    /// A long hold, voided.
    Void,
    /// A long hold posted by its sender and voided by its receiver at the same time.
    PostAndVoid,
    /// A short hold nobody settles.
    Expire,
    /// A short hold posted after a random pause, racing its expiry.
    PostLate,
}

const ACTS: [Act; 7] =
    [Act::Transfer, Act::PostAll, Act::PostPart, Act::Void, Act::PostAndVoid, Act::Expire, Act::PostLate];

#[derive(Debug, Clone)]
struct Step {
    act: Act,
    from: usize,
    to: usize,
    amount: i64,
    timeout_s: u32,
    /// For [`Act::PostPart`]: what is posted.
    part: i64,
    /// For [`Act::PostLate`]: the pause before the post.
    pause: Duration,
    key: String,
}

impl Step {
    fn covered(&self) -> bool {
        self.amount < UNCOVERED
    }
}

/// What a step made: its transfer or hold, the settlements the gateway accepted, and the
/// codes of those it refused at once.
#[derive(Debug)]
struct Done {
    step: Step,
    main: String,
    settlements: Vec<String>,
    refused: Vec<String>,
}

/// Every client's steps. Each account sends at most 2 × 12 × 999 in covered amounts, a
/// quarter of its funding, so every covered transfer and hold succeeds in any order; every
/// twelfth step is uncovered and must fail.
fn plan(rng: &mut Rng) -> Vec<Vec<Step>> {
    (0..CLIENTS)
        .map(|client| {
            let from = client % ACCOUNTS;
            (0..STEPS)
                .map(|i| {
                    let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                    let uncovered = (client + i) % 12 == 11;
                    let act = if uncovered {
                        [Act::Transfer, Act::PostAll][i % 2]
                    } else {
                        ACTS[rng.below(ACTS.len() as u64) as usize]
                    };
                    let amount = if uncovered { UNCOVERED } else { 2 + rng.below(998) as i64 };
                    let short = matches!(act, Act::Expire | Act::PostLate);
                    Step {
                        act,
                        from,
                        to,
                        amount,
                        timeout_s: if short { 2 + rng.below(2) as u32 } else { LONG_HOLD_SECONDS },
                        part: 1 + rng.below(amount as u64 - 1) as i64,
                        pause: Duration::from_millis(rng.below(2_500)),
                        key: format!("c{client}-s{i}"),
                    }
                })
                .collect()
        })
        .collect()
}

/// The clients' view of the system: the typed client, users and accounts, owned so that the
/// clients run while the test holds the cluster to kill a worker.
#[derive(Clone)]
struct People {
    api: Client,
    users: Vec<Session>,
    accounts: Vec<String>,
}

impl People {
    fn of(&self, account: usize) -> Client {
        self.api.signed_in(&self.users[account].token)
    }
}

/// Long-polls until the transaction is no longer PENDING (bounded by [`DECIDE_LIMIT`]). A 503
/// (the gateway's database read timed out on a busy machine) is asked again, as a client would:
/// the test is about the worker's death, not the gateway's reads.
async fn decided(user: &Client, id: &str) -> ledgerflow_client::TransactionBody {
    let start = Instant::now();
    loop {
        match user.wait(id, 10).await {
            Ok(t) if t.status != "PENDING" => return t,
            Ok(t) => assert!(start.elapsed() < DECIDE_LIMIT, "{} {id} still PENDING after {DECIDE_LIMIT:?}", t.kind),
            Err(e) if e.status() == Some(503) && start.elapsed() < DECIDE_LIMIT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("waiting for {id}: {e}"),
        }
    }
}

/// A settlement request's answer: accepted (its id, after waiting for its decision) or
/// refused at once with one of `refusals`.
async fn settled(
    user: &Client,
    what: &str,
    answer: ledgerflow_client::Result<ledgerflow_client::Accepted>,
    refusals: &[&str],
) -> Result<String, String> {
    match answer {
        Ok(accepted) => {
            assert!(!accepted.repeat, "{what}: a fresh key was answered as a repeat");
            decided(user, &accepted.transaction.id).await;
            Ok(accepted.transaction.id)
        }
        Err(e) if e.code().is_some_and(|code| refusals.contains(&code)) => Err(e.code().unwrap_or_default().into()),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Runs one step as its sender (and, for [`Act::PostAndVoid`], its receiver).
async fn run(people: &People, s: Step) -> Done {
    let (user, receiver) = (people.of(s.from), people.of(s.to));
    let (from, to) = (&people.accounts[s.from], &people.accounts[s.to]);
    let transfer = Transfer { from, to, amount: s.amount, idempotency_key: &s.key, description: None };
    let answer = match s.act {
        Act::Transfer => user.transfer(&transfer).await,
        _ => user.hold(&transfer, s.timeout_s).await,
    };
    let main = answer.unwrap_or_else(|e| panic!("{}: {e}", s.key)).transaction.id;
    let decision = decided(&user, &main).await;
    let mut outcomes = Vec::new();
    let (post, void) = (format!("{}-post", s.key), format!("{}-void", s.key));
    match s.act {
        Act::Transfer | Act::Expire => {}
        // A hold that never was HELD cannot be settled.
        _ if decision.status != "HELD" => {
            outcomes.push(settled(&user, &post, user.post_hold(&main, &post, None).await, &["HOLD_NOT_HELD"]).await);
        }
        Act::PostAll => outcomes.push(settled(&user, &post, user.post_hold(&main, &post, None).await, &[]).await),
        Act::PostPart => {
            outcomes.push(settled(&user, &post, user.post_hold(&main, &post, Some(s.part)).await, &[]).await);
        }
        Act::Void => outcomes.push(settled(&user, &void, user.void_hold(&main, &void).await, &[]).await),
        Act::PostAndVoid => {
            let (p, v) = tokio::join!(user.post_hold(&main, &post, None), receiver.void_hold(&main, &void));
            let refusals = &["HOLD_NOT_HELD"];
            let (p, v) = tokio::join!(settled(&user, &post, p, refusals), settled(&receiver, &void, v, refusals));
            outcomes.extend([p, v]);
        }
        Act::PostLate => {
            tokio::time::sleep(s.pause).await;
            let answer = user.post_hold(&main, &post, None).await;
            outcomes.push(settled(&user, &post, answer, &["HOLD_NOT_HELD", "HOLD_EXPIRED"]).await);
        }
    }
    let (settlements, refused) = outcomes.into_iter().partition::<Vec<_>, _>(Result::is_ok);
    Done {
        step: s,
        main,
        settlements: settlements.into_iter().flatten().collect(),
        refused: refused.into_iter().filter_map(Result::err).collect(),
    }
}

/// Runs every client's steps, one after the other per client, the clients at once.
async fn clients(people: &People, plan: Vec<Vec<Step>>, answered: &AtomicUsize) -> Vec<Done> {
    let per_client = plan.into_iter().map(|steps| async move {
        let mut done = Vec::new();
        for s in steps {
            done.push(run(people, s).await);
            answered.fetch_add(1, Ordering::SeqCst);
        }
        done
    });
    futures::stream::iter(per_client).buffer_unordered(CLIENTS).concat().await
}

/// What the kill found, for the summary line.
struct Kill {
    survivor: usize,
    /// Transactions stuck PENDING behind the frozen worker when it was killed.
    stuck: u64,
    /// MongoDB transactions left open on the server (they hold their locks until mongod
    /// aborts them).
    orphaned: usize,
}

/// Commands a worker decided so far, from its log.
fn decisions(worker: &ledgerflow_tests::processes::LoggedChild) -> usize {
    worker.log_events().iter().filter(|e| e["fields"]["message"] == "transaction decided").count()
}

/// PENDING transactions older than [`STUCK_AFTER`].
async fn stuck(c: &Cluster) -> u64 {
    let before = mongodb::bson::DateTime::from_millis((chrono::Utc::now() - STUCK_AFTER).timestamp_millis());
    let filter = mongodb::bson::doc! { "status": "PENDING", "createdAt": { "$lt": before } };
    c.raw.collection::<mongodb::bson::Document>("transactions").count_documents(filter).await.unwrap_or(0)
}

/// Once `after` steps are answered and both workers are active (each has decided commands),
/// freezes worker 1 until commands are stuck behind it, so that it surely holds deliveries
/// it has not acknowledged (and perhaps a MongoDB transaction), then SIGKILLs it.
async fn kill_a_worker(c: &mut Cluster, answered: &AtomicUsize, after: usize) -> Kill {
    let start = Instant::now();
    while answered.load(Ordering::SeqCst) < after || c.procs.workers.iter().any(|w| decisions(&w.process) == 0) {
        assert!(
            start.elapsed() < WAIT,
            "the workload did not spread over both workers\n{}",
            c.procs.workers.iter().map(|w| w.process.tail(10)).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (victim, survivor) = (1, 0);
    c.procs.workers[victim].process.signal("STOP").unwrap();
    let frozen = Instant::now();
    let stuck = loop {
        let n = stuck(c).await;
        if n >= 2 {
            break n;
        }
        assert!(frozen.elapsed() < Duration::from_secs(10), "nothing got stuck behind the frozen worker ({n})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let orphaned = c.idle_transactions().await.len();
    let status = c.procs.workers[victim].process.sigkill().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    Kill { survivor, stuck, orphaned }
}

/// Every transaction the steps made, once decided and once no hold is HELD any more (the
/// survivor's sweep expires the short ones), read from the database.
async fn final_records(c: &Cluster, done: &[Done]) -> HashMap<String, TransactionRecord> {
    let ids: Vec<String> = done.iter().flat_map(|d| std::iter::once(&d.main).chain(&d.settlements)).cloned().collect();
    let mut records: HashMap<String, TransactionRecord> =
        ids.iter().cloned().zip(c.wait_terminal(&ids, WAIT).await).collect();
    loop {
        let held: Vec<String> =
            records.values().filter(|t| t.status.as_str() == "HELD").map(|t| t.id.to_string()).collect();
        if held.is_empty() {
            return records;
        }
        for id in &held {
            let t = c.store.find_transaction(id.parse().unwrap()).await.unwrap().unwrap();
            let overdue = t.expires_at.map(|at| chrono::Utc::now() - at);
            assert!(
                overdue.is_none_or(|late| late.to_std().unwrap_or_default() < EXPIRY_LIMIT),
                "hold {id} still HELD {overdue:?} past its expiresAt: {t:?}\n{}",
                c.procs.workers.iter().map(|w| w.process.tail(15)).collect::<Vec<_>>().join("\n")
            );
            records.insert(id.clone(), t);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (status, failure reason) of a record, as strings.
fn state(t: &TransactionRecord) -> (&'static str, Option<&'static str>) {
    (t.status.as_str(), t.failure_reason.map(|r| r.as_str()))
}

/// Each step ended as its plan dictates.
fn check_step(d: &Done, records: &HashMap<String, TransactionRecord>) {
    let main = &records[&d.main];
    let what = format!("step {} ({:?} of {}, {} → {})", d.step.key, d.step.act, d.step.amount, d.step.from, d.step.to);
    let settlements: Vec<&TransactionRecord> = d.settlements.iter().map(|id| &records[id]).collect();
    for t in &settlements {
        assert_eq!(t.hold, Some(main.id), "{what}: settlement {} names another hold", t.id);
    }
    let won: Vec<&&TransactionRecord> = settlements.iter().filter(|t| state(t).0 == "COMPLETED").collect();
    let lost_with = |allowed: &[&str]| {
        settlements.iter().filter(|t| state(t).0 != "COMPLETED").all(|t| allowed.contains(&state(t).1.unwrap_or("")))
            && d.refused.iter().all(|code| allowed.contains(&code.as_str()))
    };
    if !d.step.covered() {
        assert_eq!(state(main), ("FAILED", Some("INSUFFICIENT_FUNDS")), "{what}");
        assert!(won.is_empty() && lost_with(&["HOLD_NOT_HELD"]), "{what}: {settlements:?} {:?}", d.refused);
        return;
    }
    let expected = match d.step.act {
        Act::Transfer => "COMPLETED",
        Act::PostAll | Act::PostPart => "POSTED",
        Act::Void => "VOIDED",
        Act::Expire => "EXPIRED",
        Act::PostAndVoid => match won.first().map(|t| t.kind.as_str()) {
            Some("POST_HOLD") => "POSTED",
            _ => "VOIDED",
        },
        Act::PostLate => {
            if won.is_empty() {
                "EXPIRED"
            } else {
                "POSTED"
            }
        }
    };
    // One settlement wins (none for a transfer or an expiry); the others lose as they may.
    let (winners, losers): (usize, &[&str]) = match d.step.act {
        Act::Transfer | Act::Expire => (0, &[]),
        Act::PostAll | Act::PostPart | Act::Void | Act::PostAndVoid => (1, &["HOLD_NOT_HELD"]),
        Act::PostLate => (won.len(), &["HOLD_NOT_HELD", "HOLD_EXPIRED"]),
    };
    assert_eq!(won.len(), winners, "{what}: settlements {settlements:?}, refused {:?}", d.refused);
    assert!(lost_with(losers), "{what}: settlements {settlements:?}, refused {:?}", d.refused);
    assert_eq!(state(main), (expected, None), "{what}: {main:?}");
    let posted = match d.step.act {
        Act::PostAll => Some(d.step.amount),
        Act::PostPart => Some(d.step.part),
        _ => None,
    };
    if let Some(amount) = posted {
        assert_eq!(main.posted_amount.map(|a| a.minor()), Some(amount), "{what}: {main:?}");
    }
}

/// Every hold's end agrees with the settlements that name it: exactly one COMPLETED for a
/// POSTED or VOIDED hold (the one it names, before its expiry), none otherwise.
fn check_holds(records: &HashMap<String, TransactionRecord>) {
    let mut settled_by: HashMap<String, Vec<&TransactionRecord>> = HashMap::new();
    for t in records.values().filter(|t| t.kind.resolves_hold() && state(t).0 == "COMPLETED") {
        settled_by.entry(t.hold.map(|h| h.to_string()).unwrap_or_default()).or_default().push(t);
    }
    for hold in records.values().filter(|t| t.kind.as_str() == "HOLD") {
        let id = hold.id.to_string();
        let winners = settled_by.remove(&id).unwrap_or_default();
        let what = format!("hold {id}: {hold:?}\ncompleted settlements: {winners:?}");
        let expires_at = hold.expires_at.expect("a hold has expiresAt");
        match state(hold).0 {
            "POSTED" | "VOIDED" => {
                let kind = if state(hold).0 == "POSTED" { "POST_HOLD" } else { "VOID_HOLD" };
                assert_eq!(winners.len(), 1, "{what}");
                assert_eq!((hold.resolved_by, winners[0].kind.as_str()), (Some(winners[0].id), kind), "{what}");
                assert!(hold.resolved_at.is_some_and(|at| at < expires_at), "settled at or after expiresAt: {what}");
                if kind == "POST_HOLD" {
                    assert_eq!(hold.posted_amount, Some(winners[0].amount), "{what}");
                    assert!(winners[0].amount.minor() <= hold.amount.minor(), "{what}");
                }
            }
            "EXPIRED" => {
                assert!(winners.is_empty() && hold.resolved_by.is_none(), "{what}");
                assert!(hold.resolved_at.is_some_and(|at| at >= expires_at), "expired early: {what}");
            }
            "FAILED" => assert!(winners.is_empty(), "{what}"),
            other => panic!("hold ended {other}: {what}"),
        }
    }
    assert!(settled_by.is_empty(), "completed settlements of no hold of the test: {settled_by:?}");
}

/// Every account's balance, reserved amounts and available are exactly what the final
/// states imply, the money a hold moved counted once, from the hold. Returns how many
/// entries the ledger must hold.
async fn check_money(c: &Cluster, people: &People, records: &HashMap<String, TransactionRecord>) -> usize {
    let index: HashMap<&str, usize> = people.accounts.iter().enumerate().map(|(i, a)| (a.as_str(), i)).collect();
    // Per account: (balance, pendingDebits, pendingCredits); every account was funded.
    let mut want = [(FUNDING, 0, 0); ACCOUNTS];
    let mut entries = 2 * ACCOUNTS;
    for t in records.values() {
        let (from, to) = (index[t.from_account.to_string().as_str()], index[t.to_account.to_string().as_str()]);
        let moved = match (t.kind.as_str(), state(t).0) {
            ("TRANSFER", "COMPLETED") => t.amount.minor(),
            ("HOLD", "POSTED") => t.posted_amount.expect("a POSTED hold has postedAmount").minor(),
            ("HOLD", "HELD") => {
                want[from].1 += t.amount.minor();
                want[to].2 += t.amount.minor();
                continue;
            }
            _ => continue,
        };
        want[from].0 -= moved;
        want[to].0 += moved;
        entries += 2;
    }
    let system = c.as_user(&c.system);
    for (i, account) in people.accounts.iter().enumerate() {
        let b = c.must("balance", system.balance(account).await);
        let (balance, debits, credits) = want[i];
        assert_eq!(
            (b.balance, b.pending_debits, b.pending_credits, b.available, b.overdraft_limit),
            (balance, debits, credits, balance - debits, 0),
            "account {i} ({account}): balance, pendingDebits, pendingCredits, available, overdraftLimit"
        );
    }
    let total: i64 = want.iter().map(|w| w.0).sum();
    assert_eq!(total, FUNDING * ACCOUNTS as i64, "money was made or lost between the test's accounts");
    entries
}

/// Counts of how the steps ended, for the summary line.
fn outcomes(records: &HashMap<String, TransactionRecord>) -> String {
    let mut by: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    // How late the sweep expired holds: a second or so normally, more while the killed
    // worker's open MongoDB transaction still locked what the sweep had to write.
    let (mut expiry_lag, mut late) = (chrono::TimeDelta::zero(), 0);
    for t in records.values() {
        *by.entry(format!("{}_{}", t.kind.as_str(), state(t).0).to_lowercase()).or_default() += 1;
        if let (Some(at), Some(due), "EXPIRED") = (t.resolved_at, t.expires_at, state(t).0) {
            expiry_lag = expiry_lag.max(at - due);
            late += usize::from(at - due > chrono::TimeDelta::seconds(3));
        }
    }
    let counts: Vec<String> = by.iter().map(|(k, n)| format!("{k}={n}")).collect();
    format!("{} max_expiry_lag={:.1}s expired_over_3s_late={late}", counts.join(" "), expiry_lag.as_seconds_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_in_flight_when_a_worker_is_sigkilled_settle_once_and_reconcile() {
    fault_test("holds", async {
        let started = Instant::now();
        let mut c = Cluster::start("holds", 2).await;
        let mut w = Workload::setup(&c).await;
        let people = People { api: c.api.clone(), users: w.users.clone(), accounts: w.accounts.clone() };
        let steps = plan(&mut w.rng);
        // The kill comes a third of the way through, and the clients carry on through it.
        let answered = AtomicUsize::new(0);
        let after = CLIENTS * STEPS / 3;
        let (done, kill) = tokio::join!(clients(&people, steps, &answered), kill_a_worker(&mut c, &answered, after));

        let records = final_records(&c, &done).await;
        let pending = c
            .raw
            .collection::<mongodb::bson::Document>("transactions")
            .count_documents(mongodb::bson::doc! { "status": "PENDING" })
            .await
            .unwrap();
        assert_eq!(pending, 0, "transactions left PENDING in the database");
        for d in &done {
            check_step(d, &records);
        }
        check_holds(&records);
        let entries = check_money(&c, &people, &records).await;
        let (code, report) = c.reconcile(&["--max-pending-age", "1h", "--hold-expiry-grace", "30s"]).await;
        assert_eq!((code, &report["ok"]), (0, &json!(true)), "reconcile: {report}");
        assert_eq!(
            (&report["transactions"], &report["entries"]),
            (&json!(ACCOUNTS + records.len()), &json!(entries)),
            "no transaction or entry missing and none extra: {report}"
        );
        // The survivor took over commands the killed worker had been given but not settled.
        let redelivered = c.redelivered_to(kill.survivor).len();
        assert!(redelivered > 0, "the killed worker left no deliveries to the survivor");
        c.assert_processes_alive();
        println!(
            "FAULTS holds: steps={} transactions={} {} stuck_at_kill={} orphaned_db_transactions={} \
             redelivered_to_survivor={redelivered} retried={} seed={} in {:.1}s",
            done.len(),
            records.len(),
            outcomes(&records),
            kill.stuck,
            kill.orphaned,
            c.retried(),
            w.seed,
            started.elapsed().as_secs_f64()
        );
        c.teardown().await;
    })
    .await;
}
