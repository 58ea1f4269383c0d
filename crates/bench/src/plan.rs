//! What a load sends and when: the planned transfers (random pairs, or mostly from one hot
//! account), the open-loop pace of `--rate`, and the commands an upstream system would publish.

use std::time::Duration;

use anyhow::Result;
use ledgerflow_domain::{
    AccountId, Amount, Currency, HoldTimeout, TransactionId, TransferCommand, TransferKind, TransferRequest,
};
use rand::Rng;

/// What every account is funded with, in cents: far more than the load can take out of it
/// (at most `MAX_TRANSFER_CENTS` a transfer), so a FAILED transfer means something is wrong.
pub const FUNDING_CENTS: i64 = 10_000_000;
/// Transfers move 1 to this many cents.
pub const MAX_TRANSFER_CENTS: i64 = 100;
/// The initiator of `--direct` and `--raw` commands: an upstream system named `bench`.
const SERVICE_INITIATOR: &str = "service:bench";

/// One planned transfer: indexes into the account list, so the raw phase can replay the same
/// plan on its own accounts.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub from: usize,
    pub to: usize,
    pub amount: i64,
}

/// Random pairs; with `hot_percent`, that share of transfers comes from account 0 (the worst
/// case: every posting on one account conflicts with the others and retries).
pub fn plan(accounts: usize, transfers: usize, hot_percent: Option<u8>) -> Vec<Planned> {
    let mut rng = rand::rng();
    (0..transfers)
        .map(|_| {
            let from = match hot_percent {
                Some(p) if rng.random_range(0..100) < p => 0,
                _ => rng.random_range(0..accounts),
            };
            let mut to = rng.random_range(0..accounts - 1);
            if to >= from {
                to += 1;
            }
            Planned { from, to, amount: rng.random_range(1..=MAX_TRANSFER_CENTS) }
        })
        .collect()
}

/// Open-loop pacing for `--rate`: transfer `i` is sent no earlier than `i / rate` seconds
/// after the start, whatever happened to the ones before it.
#[derive(Clone, Copy)]
pub struct Pace {
    start: tokio::time::Instant,
    rate: Option<u32>,
}

impl Pace {
    /// Starts now; without a rate, no transfer waits.
    pub fn new(rate: Option<u32>) -> Self {
        Self { start: tokio::time::Instant::now(), rate }
    }

    pub async fn wait_turn(self, i: usize) {
        if let Some(rate) = self.rate {
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(i as f64 / f64::from(rate))).await;
        }
    }
}

/// A command as an upstream system sends it: initiator `service:bench` and no transaction id,
/// so the worker creates the transaction, scoped by initiator and idempotency key.
pub fn upstream_command(
    kind: TransferKind,
    from: AccountId,
    to: AccountId,
    amount: i64,
    key: &str,
) -> Result<TransferCommand> {
    upstream(TransferRequest::new(kind, from, to, Amount::new(amount)?, Currency::USD, None)?, key)
}

/// An upstream HOLD of `amount` on `from` in favour of `to`, HELD for at most `timeout`.
pub fn upstream_hold(
    from: AccountId,
    to: AccountId,
    amount: i64,
    timeout: HoldTimeout,
    key: &str,
) -> Result<TransferCommand> {
    upstream(TransferRequest::hold(from, to, Amount::new(amount)?, Currency::USD, None, timeout)?, key)
}

/// An upstream POST_HOLD of the whole of `hold`, which the worker created for an upstream
/// HOLD: a queued settlement names the hold's accounts and amount as well as the hold.
pub fn upstream_post(
    hold: TransactionId,
    from: AccountId,
    to: AccountId,
    amount: i64,
    key: &str,
) -> Result<TransferCommand> {
    let request = TransferRequest::settle(TransferKind::PostHold, hold, from, to, Amount::new(amount)?, Currency::USD)?;
    upstream(request, key)
}

fn upstream(request: TransferRequest, key: &str) -> Result<TransferCommand> {
    Ok(TransferCommand {
        transaction_id: None,
        request,
        idempotency_key: key.parse()?,
        initiator: SERVICE_INITIATOR.parse()?,
        requested_at: chrono::Utc::now(),
    })
}

#[cfg(test)]
mod tests {
    use ledgerflow_domain::{AccountId, HoldTimeout, TransactionId, TransferCommand, TransferKind};

    use super::{MAX_TRANSFER_CENTS, plan, upstream_hold, upstream_post};

    /// What a worker reads of a published command.
    fn as_published(cmd: &TransferCommand) -> TransferCommand {
        TransferCommand::parse(&cmd.to_json()).expect("a valid command")
    }

    #[test]
    fn upstream_holds_and_posts_are_valid_queue_commands() {
        let (a, b): (AccountId, AccountId) = (
            "0190a0a0-0000-7000-8000-000000000001".parse().expect("an id"),
            "0190a0a0-0000-7000-8000-000000000002".parse().expect("an id"),
        );
        let timeout = HoldTimeout::new(600).expect("a timeout");
        let hold = as_published(&upstream_hold(a, b, 42, timeout, "k-hold").expect("a hold"));
        assert_eq!((hold.request.kind, hold.request.timeout), (TransferKind::Hold, Some(timeout)));
        let id: TransactionId = "0190a0a0-0000-7000-8000-00000000000a".parse().expect("an id");
        let post = as_published(&upstream_post(id, a, b, 42, "k-post").expect("a post"));
        assert_eq!((post.request.kind, post.request.hold), (TransferKind::PostHold, Some(id)));
        assert_eq!((post.request.from, post.request.to, post.request.amount.minor()), (a, b, 42));
        assert!(post.transaction_id.is_none() && post.initiator.to_string() == "service:bench");
    }

    #[test]
    fn plans_never_send_to_the_sender_and_hot_plans_concentrate() {
        let random = plan(3, 2_000, None);
        assert!(random.iter().all(|t| t.from != t.to && t.to < 3 && (1..=MAX_TRANSFER_CENTS).contains(&t.amount)));
        let hot = plan(10, 2_000, Some(90));
        let from_hot = hot.iter().filter(|t| t.from == 0).count();
        assert!(from_hot > 1_700, "{from_hot} of 2000 from the hot account");
    }
}
