//! The fault tests' workload: accounts funded through the gateway, and transfers between them
//! planned so that the outcome of every one is known whatever the order of processing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use ledgerflow_tests::Session;
use ledgerflow_tests::processes::Cluster;
use ledgerflow_tests::serde_json::{Value, json};
use reqwest::StatusCode;

/// Accounts (one user each) that send transfers to one another.
pub const ACCOUNTS: usize = 8;
/// What each account is funded with: more than it sends in covered transfers (up to 600
/// transfers in a test, so 75 per account of at most 999).
pub const FUNDING: i64 = 100_000;
/// An amount no account can ever cover (all the money in a test is under a million).
pub const UNCOVERED: i64 = 1_000_000_000_000;
/// Upper bound for the system to settle after a fault.
pub const WAIT: Duration = Duration::from_secs(60);

/// xorshift64*: reproducible amounts (`LEDGERFLOW_FAULT_SEED=<seed>` replays a run).
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> (Self, u64) {
        let seed = std::env::var("LEDGERFLOW_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
        (Self(seed | 1), seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// One transfer the test will send, from the account (and user) `from` to `to`.
#[derive(Debug, Clone)]
pub struct Planned {
    pub from: usize,
    pub to: usize,
    pub amount: i64,
    pub key: String,
}

impl Planned {
    pub fn covered(&self) -> bool {
        self.amount < UNCOVERED
    }
}

/// What the gateway answered to one transfer (`Err`: no answer, or a broken connection).
pub struct Sent {
    pub plan: Planned,
    pub answer: Result<(StatusCode, Value), String>,
}

impl Sent {
    pub fn status(&self) -> Option<StatusCode> {
        self.answer.as_ref().ok().map(|(s, _)| *s)
    }

    /// 503 `BROKER_UNAVAILABLE`: recorded, to be sent by the republisher.
    pub fn deferred(&self) -> bool {
        matches!(&self.answer, Ok((StatusCode::SERVICE_UNAVAILABLE, b)) if b["error"]["code"] == "BROKER_UNAVAILABLE")
    }

    /// Accepted: 202, or 200 to a retry of a request whose first answer was lost (the
    /// transaction recorded then).
    pub fn accepted(&self) -> bool {
        matches!(self.status(), Some(StatusCode::ACCEPTED | StatusCode::OK))
    }

    /// The transaction the gateway recorded, if it says it did.
    pub fn recorded_id(&self) -> Option<String> {
        match &self.answer {
            Ok((StatusCode::ACCEPTED | StatusCode::OK, b)) => b["transaction"]["id"].as_str().map(Into::into),
            Ok((StatusCode::SERVICE_UNAVAILABLE, b)) if self.deferred() => {
                b["error"]["transactionId"].as_str().map(Into::into)
            }
            _ => None,
        }
    }
}

/// The test's users and accounts, funded.
pub struct Workload {
    pub users: Vec<Session>,
    pub accounts: Vec<String>,
    pub rng: Rng,
    pub seed: u64,
}

impl Workload {
    pub async fn setup(c: &Cluster) -> Self {
        let made = futures::future::join_all((0..ACCOUNTS).map(|_| c.user_with_account())).await;
        let (users, accounts): (Vec<Session>, Vec<String>) = made.into_iter().unzip();
        let funding = futures::future::join_all(accounts.iter().map(|a| c.request_funding(a, FUNDING))).await;
        for t in c.wait_terminal(&funding, WAIT).await {
            assert_eq!(t.status.as_str(), "COMPLETED", "funding {} did not complete: {t:?}", t.id);
        }
        let (rng, seed) = Rng::seeded();
        Self { users, accounts, rng, seed }
    }

    /// `n` transfers round-robin over the accounts, to random other accounts, of random
    /// amounts up to 999 except every tenth, which is uncovered. Each account's covered
    /// transfers add up to less than its funding, so they all complete in any order.
    pub fn plan(&mut self, n: usize, tag: &str) -> Vec<Planned> {
        let plan: Vec<Planned> = (0..n)
            .map(|i| {
                let from = i % ACCOUNTS;
                let to = (from + 1 + self.rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                let amount = if i % 10 == 9 { UNCOVERED } else { 1 + self.rng.below(999) as i64 };
                Planned { from, to, amount, key: format!("{tag}-{i}") }
            })
            .collect();
        for a in 0..ACCOUNTS {
            let out: i64 = plan.iter().filter(|p| p.from == a && p.covered()).map(|p| p.amount).sum();
            assert!(out <= FUNDING, "plan error: account {a} would send {out} of its {FUNDING}");
        }
        plan
    }

    pub fn body(&self, p: &Planned) -> Value {
        json!({
            "fromAccount": self.accounts[p.from],
            "toAccount": self.accounts[p.to],
            "amount": p.amount,
            "idempotencyKey": p.key,
        })
    }

    pub async fn send_one(&self, c: &Cluster, p: &Planned) -> Sent {
        let answer = c
            .try_call("POST", "/transactions", Some(&self.users[p.from].token), Some(self.body(p)))
            .await
            .map_err(|e| format!("{e:?}"));
        Sent { plan: p.clone(), answer }
    }

    /// Sends the transfers, `concurrency` at a time; `answered` counts the answers so far.
    pub async fn send(&self, c: &Cluster, plan: &[Planned], concurrency: usize, answered: &AtomicUsize) -> Vec<Sent> {
        futures::stream::iter(plan)
            .map(|p| async move {
                let sent = self.send_one(c, p).await;
                answered.fetch_add(1, Ordering::SeqCst);
                sent
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }
}

pub fn assert_all_accepted(sent: &[Sent]) {
    for s in sent {
        assert_eq!(s.status(), Some(StatusCode::ACCEPTED), "{}: {:?}", s.plan.key, s.answer);
    }
}
