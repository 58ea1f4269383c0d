//! The decision's rules, judged without a database.

use ledgerflow_domain::{AccountLimits, AccountStatus, Amount, Currency, Initiator, UserId};

use super::*;

fn account(balance: i64, seq: i64) -> AccountHead {
    let account = AccountRecord {
        id: AccountId::generate(),
        owner_id: Some(UserId::generate()),
        status: AccountStatus::Active,
        currency: Currency::USD,
        seq,
        created_at: Utc::now(),
        reserved: Reserved::default(),
        limits: AccountLimits::NONE,
        peak_overdraft: 0,
        metadata: Default::default(),
    };
    let hash = if seq == 0 { GENESIS_HASH.to_owned() } else { format!("head-of-{seq}") };
    AccountHead { account, balance: Balance(balance), hash, last_at: None }
}

fn command(kind: TransferKind, from: AccountId, to: AccountId, amount: i64, key: &str) -> TransferCommand {
    let amount = Amount::new(amount).expect("amount");
    let request = match kind {
        TransferKind::Reversal => unreachable!("reversals are built with `reversal`"),
        kind => TransferRequest::new(kind, from, to, amount, Currency::USD, None).expect("valid request"),
    };
    upstream(request, key)
}

/// An upstream command: no transaction id, found or created by key.
fn upstream(request: TransferRequest, key: &str) -> TransferCommand {
    TransferCommand {
        transaction_id: None,
        request,
        idempotency_key: key.parse().expect("key"),
        initiator: "service:payroll".parse::<Initiator>().expect("initiator"),
        requested_at: Utc::now(),
    }
}

/// A gateway command, whose PENDING record `loaded` holds.
fn recorded(loaded: &mut Loaded, cmd: TransferCommand) -> TransferCommand {
    let record = TransactionRecord::pending(TransactionId::generate(), &cmd, Utc::now());
    let key = (record.initiator.to_string(), record.idempotency_key.as_str().to_owned());
    let cmd = TransferCommand { transaction_id: Some(record.id), ..cmd };
    loaded.add_transaction(record.id, key, Ok(record));
    cmd
}

fn loaded(accounts: &[&AccountHead]) -> Loaded {
    let mut loaded = Loaded::default();
    for head in accounts {
        loaded.accounts.insert(head.account.id, Ok((*head).clone()));
    }
    loaded
}

fn decided(outcome: &Outcome) -> &TransactionRecord {
    match outcome {
        Ok(Execution::Decided { record, .. }) => record,
        other => panic!("expected a decision, got {other:?}"),
    }
}

fn status(outcome: &Outcome) -> (TransactionStatus, Option<FailureReason>) {
    let record = decided(outcome);
    (record.status, record.failure_reason)
}

fn hold_command(from: AccountId, to: AccountId, amount: i64, key: &str) -> TransferCommand {
    let timeout = ledgerflow_domain::HoldTimeout::new(60).expect("timeout");
    let amount = Amount::new(amount).expect("amount");
    upstream(TransferRequest::hold(from, to, amount, Currency::USD, None, timeout).expect("hold"), key)
}

fn settle_command(kind: TransferKind, hold: &TransactionRecord, amount: i64, key: &str) -> TransferCommand {
    let amount = Amount::new(amount).expect("amount");
    let request = TransferRequest::settle(kind, hold.id, hold.from_account, hold.to_account, amount, hold.currency);
    upstream(request.expect("settlement"), key)
}

#[test]
fn a_hold_reserves_without_an_entry_and_later_debits_see_the_reservation() {
    let (a, b) = (account(100, 1), account(0, 0));
    let hold = hold_command(a.account.id, b.account.id, 60, "auth");
    let spend = command(TransferKind::Transfer, a.account.id, b.account.id, 50, "spend");
    let (outcomes, plan) = decide(loaded(&[&a, &b]), &[hold, spend], Utc::now());
    assert_eq!(status(&outcomes[0]), (TransactionStatus::Held, None));
    assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::InsufficientFunds)));
    assert!(plan.entries.is_empty());
    let write = |id| plan.account_writes.iter().find(|w| w.account == id).expect("a write").clone();
    assert_eq!(write(a.account.id).written, (1, Reserved { debits: 60, credits: 0 }));
    assert_eq!(write(b.account.id).written, (0, Reserved { debits: 0, credits: 60 }));
}

#[test]
fn a_partial_post_moves_its_amount_and_releases_the_whole_reservation_once() {
    let (mut a, mut b) = (account(100, 1), account(0, 0));
    a.account.reserved.debits = 60;
    b.account.reserved.credits = 60;
    let mut l = loaded(&[&a, &b]);
    let held = {
        let cmd = recorded(&mut l, hold_command(a.account.id, b.account.id, 60, "auth"));
        let id = cmd.transaction_id.expect("an id");
        let Some(Ok(record)) = l.transactions.get_mut(&id) else { panic!("recorded") };
        record.status = TransactionStatus::Held;
        record.clone()
    };
    let post = settle_command(TransferKind::PostHold, &held, 25, "capture");
    let void = settle_command(TransferKind::VoidHold, &held, 60, "void");
    let (outcomes, plan) = decide(l, &[post, void], Utc::now());
    assert_eq!(status(&outcomes[0]), (TransactionStatus::Completed, None));
    assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::HoldNotHeld)));
    assert_eq!(
        plan.entries.iter().map(|e| (e.entry_type, e.amount.minor())).collect::<Vec<_>>(),
        [(EntryType::Debit, 25), (EntryType::Credit, 25)]
    );
    let none = Reserved::default();
    let write = |id| plan.account_writes.iter().find(|w| w.account == id).expect("a write").clone();
    assert_eq!((write(a.account.id).written, write(b.account.id).written), ((2, none), (1, none)));
    let settled = &plan.settled[..];
    assert_eq!(settled.len(), 1);
    assert_eq!(
        (settled[0].hold, settled[0].status, settled[0].posted_amount),
        (held.id, TransactionStatus::Posted, Some(Amount::new(25).expect("25")))
    );
}

#[test]
fn a_settlement_at_or_after_expires_at_fails_even_if_the_hold_still_reads_held() {
    let (a, b) = (account(100, 1), account(0, 0));
    let mut l = loaded(&[&a, &b]);
    let cmd = recorded(&mut l, hold_command(a.account.id, b.account.id, 60, "auth"));
    let id = cmd.transaction_id.expect("an id");
    let Some(Ok(record)) = l.transactions.get_mut(&id) else { panic!("recorded") };
    record.status = TransactionStatus::Held;
    let held = record.clone();
    let at = held.expires_at.expect("a hold expires");
    let (outcomes, plan) = decide(l, &[settle_command(TransferKind::VoidHold, &held, 60, "void")], at);
    assert_eq!(status(&outcomes[0]), (TransactionStatus::Failed, Some(FailureReason::HoldExpired)));
    assert!(plan.settled.is_empty() && plan.account_writes.is_empty());
}

/// Reads holding a HELD hold of 60 from `a` (100, seq 1) to `b`, reserved on both.
fn a_held_hold_of_60() -> (Loaded, AccountHead, AccountHead, TransactionRecord) {
    let (mut a, mut b) = (account(100, 1), account(0, 0));
    a.account.reserved.debits = 60;
    b.account.reserved.credits = 60;
    let mut l = loaded(&[&a, &b]);
    let cmd = recorded(&mut l, hold_command(a.account.id, b.account.id, 60, "auth"));
    let id = cmd.transaction_id.expect("an id");
    let Some(Ok(record)) = l.transactions.get_mut(&id) else { panic!("recorded") };
    record.status = TransactionStatus::Held;
    let held = record.clone();
    (l, a, b, held)
}

#[test]
fn a_completed_settlement_returns_the_hold_it_settled_and_so_does_its_repeat() {
    let (l, _, _, held) = a_held_hold_of_60();
    let post = settle_command(TransferKind::PostHold, &held, 60, "capture");
    let (outcomes, _) = decide(l, &[post.clone(), post], Utc::now());
    let Ok(Execution::Decided { record, hold: Some(hold) }) = &outcomes[0] else { panic!("{:?}", outcomes[0]) };
    assert_eq!((hold.id, hold.status, hold.resolved_by), (held.id, TransactionStatus::Posted, Some(record.id)));
    let Ok(Execution::AlreadyTerminal { hold: Some(again), .. }) = &outcomes[1] else { panic!("{:?}", outcomes[1]) };
    assert_eq!(again, hold);
}

#[test]
fn a_failed_settlement_and_a_transfer_return_no_hold() {
    let (l, a, b, held) = a_held_hold_of_60();
    let too_much = settle_command(TransferKind::PostHold, &held, 61, "greedy");
    let transfer = command(TransferKind::Transfer, a.account.id, b.account.id, 10, "t");
    let (outcomes, _) = decide(l, &[too_much, transfer], Utc::now());
    for outcome in &outcomes {
        assert!(matches!(outcome, Ok(Execution::Decided { hold: None, .. })), "{outcome:?}");
    }
}

#[test]
fn a_due_hold_expires_and_its_whole_reservation_is_released() {
    let (l, a, b, held) = a_held_hold_of_60();
    let at = held.expires_at.expect("a hold expires");
    let (expired, plan) = expire(l, held.id, at);
    let expired = expired.expect("no error").expect("expired");
    assert_eq!((expired.id, expired.status, expired.resolved_at), (held.id, TransactionStatus::Expired, Some(at)));
    assert_eq!((expired.resolved_by, expired.posted_amount), (None, None));
    let none = Reserved::default();
    let mut writes = vec![
        AccountWrite { account: a.account.id, read: (1, Reserved { debits: 60, credits: 0 }), written: (1, none) },
        AccountWrite { account: b.account.id, read: (0, Reserved { debits: 0, credits: 60 }), written: (0, none) },
    ];
    writes.sort_by_key(|w| w.account);
    assert_eq!(plan.account_writes, writes);
    let settled = Settled {
        hold: held.id,
        status: TransactionStatus::Expired,
        posted_amount: None,
        resolved_by: None,
        resolved_at: at,
    };
    assert_eq!(plan.settled, [settled]);
    assert!(plan.entries.is_empty() && plan.decided.is_empty() && plan.created.is_empty());
}

#[test]
fn a_hold_not_due_or_no_longer_held_does_not_expire() {
    let (l, _, _, held) = a_held_hold_of_60();
    let at = held.expires_at.expect("a hold expires");
    let (expired, plan) = expire(l, held.id, at - chrono::Duration::milliseconds(1));
    assert!(matches!(expired, Ok(None)));
    assert!(plan.is_empty() && plan.account_writes.is_empty());

    for status in [TransactionStatus::Posted, TransactionStatus::Voided, TransactionStatus::Expired] {
        let (mut l, _, _, held) = a_held_hold_of_60();
        if let Some(Ok(record)) = l.transactions.get_mut(&held.id) {
            record.status = status;
        }
        let (expired, plan) = expire(l, held.id, at + chrono::Duration::days(1));
        assert!(matches!(expired, Ok(None)), "{status}");
        assert!(plan.is_empty() && plan.account_writes.is_empty());
    }
    let (expired, plan) = expire(loaded(&[]), TransactionId::generate(), at);
    assert!(matches!(expired, Ok(None)) && plan.is_empty());
}

#[test]
fn a_hold_whose_account_is_missing_is_not_expired_by_half() {
    let (mut l, a, _, held) = a_held_hold_of_60();
    l.accounts.remove(&a.account.id);
    let (expired, plan) = expire(l, held.id, held.expires_at.expect("a hold expires"));
    assert!(matches!(expired, Err(StoreError::Corrupt { .. })), "{expired:?}");
    assert!(plan.is_empty() && plan.account_writes.is_empty());
}

#[test]
fn debits_of_one_account_in_a_batch_see_each_other() {
    let (a, b) = (account(150, 3), account(0, 0));
    let mut l = loaded(&[&a, &b]);
    let first = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 100, "k1"));
    let second = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 100, "k2"));
    let third = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 50, "k3"));
    let (outcomes, plan) = decide(l, &[first, second, third], Utc::now());
    assert_eq!(status(&outcomes[0]), (TransactionStatus::Completed, None));
    assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::InsufficientFunds)));
    assert_eq!(status(&outcomes[2]), (TransactionStatus::Completed, None));
    // Two postings, four entries, numbered on from each account's seq and chained.
    let on = |id| plan.entries.iter().filter(|e| e.account_id == id).collect::<Vec<_>>();
    let debits = on(a.account.id);
    assert_eq!(debits.iter().map(|e| (e.seq, e.balance_after.minor())).collect::<Vec<_>>(), [(4, 50), (5, 0)]);
    assert_eq!(debits[0].prev_hash, "head-of-3");
    assert_eq!(debits[1].prev_hash, debits[0].hash);
    assert_eq!(debits[0].hash, debits[0].chain_fields().hash());
    let credits = on(b.account.id);
    assert_eq!(credits.iter().map(|e| (e.seq, e.balance_after.minor())).collect::<Vec<_>>(), [(1, 100), (2, 150)]);
    assert_eq!(credits[0].prev_hash, GENESIS_HASH);
    // Each account moves once, guarded by the seq it was read at.
    let none = Reserved::default();
    let mut writes = vec![
        AccountWrite { account: a.account.id, read: (3, none), written: (5, none) },
        AccountWrite { account: b.account.id, read: (0, none), written: (2, none) },
    ];
    writes.sort_by_key(|w| w.account);
    assert_eq!(plan.account_writes, writes);
    assert_eq!(plan.decided.len(), 3);
    assert!(plan.created.is_empty() && plan.new_accounts.is_empty() && plan.reversed.is_empty());
}

#[test]
fn a_terminal_record_is_answered_without_writing() {
    let (a, b) = (account(100, 1), account(0, 0));
    let mut l = loaded(&[&a, &b]);
    let cmd = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 10, "k"));
    let id = cmd.transaction_id.expect("an id");
    if let Some(Ok(record)) = l.transactions.get_mut(&id) {
        record.status = TransactionStatus::Completed;
    }
    let (outcomes, plan) = decide(l, &[cmd], Utc::now());
    assert!(matches!(&outcomes[0], Ok(Execution::AlreadyTerminal { record: r, .. }) if r.id == id));
    assert!(plan.is_empty() && plan.account_writes.is_empty());
}

#[test]
fn a_command_that_contradicts_its_record_is_a_mismatch() {
    let (a, b) = (account(100, 1), account(0, 0));
    let mut l = loaded(&[&a, &b]);
    let cmd = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 10, "k"));
    let tampered = TransferCommand {
        request: TransferRequest { amount: Amount::new(11).expect("amount"), ..cmd.request.clone() },
        ..cmd.clone()
    };
    let unknown = TransferCommand { transaction_id: Some(TransactionId::generate()), ..cmd.clone() };
    let (outcomes, plan) = decide(l, &[tampered, unknown.clone()], Utc::now());
    assert!(matches!(&outcomes[0], Ok(Execution::Mismatch { existing }) if Some(*existing) == cmd.transaction_id));
    assert!(matches!(&outcomes[1], Ok(Execution::UnknownTransaction(id)) if Some(*id) == unknown.transaction_id));
    assert!(plan.is_empty());
}

#[test]
fn an_upstream_command_is_created_once_and_its_copy_finds_it() {
    let (a, b) = (account(100, 1), account(0, 0));
    let cmd = command(TransferKind::Transfer, a.account.id, b.account.id, 10, "pay-1");
    let (outcomes, plan) = decide(loaded(&[&a, &b]), &[cmd.clone(), cmd], Utc::now());
    let created = decided(&outcomes[0]);
    assert_eq!(created.status, TransactionStatus::Completed);
    assert!(matches!(&outcomes[1], Ok(Execution::AlreadyTerminal { record: r, .. }) if r.id == created.id));
    assert_eq!(plan.created, std::slice::from_ref(created));
    assert!(plan.decided.is_empty());
    assert_eq!(plan.entries.len(), 2);
}

#[test]
fn the_first_initial_funds_opens_the_funding_account() {
    let b = account(0, 0);
    let funding = AccountId::funding(Currency::USD);
    let cmd = command(TransferKind::InitialFunds, funding, b.account.id, 500, "fund");
    let (outcomes, plan) = decide(
        loaded(&[&b]),
        &[cmd.clone(), command(TransferKind::InitialFunds, funding, b.account.id, 1, "again")],
        Utc::now(),
    );
    assert_eq!(status(&outcomes[0]), (TransactionStatus::Completed, None));
    assert_eq!(status(&outcomes[1]), (TransactionStatus::Completed, None));
    // Inserted once, already at the seq of its last entry; never bumped.
    assert_eq!(plan.new_accounts.len(), 1);
    assert_eq!((plan.new_accounts[0].id, plan.new_accounts[0].seq), (funding, 2));
    assert!(plan.account_writes.iter().all(|w| w.account != funding));
    let last = plan.entries.iter().rfind(|e| e.account_id == funding).expect("a funding entry");
    assert_eq!(last.balance_after, Balance(-501));
}

#[test]
fn a_failed_first_initial_funds_opens_no_funding_account() {
    let funding = AccountId::funding(Currency::USD);
    let nowhere = AccountId::generate();
    let cmd = command(TransferKind::InitialFunds, funding, nowhere, 500, "fund");
    let (outcomes, plan) = decide(loaded(&[]), &[cmd], Utc::now());
    assert_eq!(status(&outcomes[0]), (TransactionStatus::Failed, Some(FailureReason::AccountNotFound)));
    assert!(plan.new_accounts.is_empty() && plan.entries.is_empty());
    assert_eq!(plan.created.len(), 1);
}

/// A batch's reads holding a COMPLETED transfer of 100 from `a` (now 0) to `b` (now 100).
fn a_completed_transfer_of_100() -> (Loaded, AccountHead, AccountHead, TransactionRecord) {
    let (a, b) = (account(0, 1), account(100, 1));
    let mut l = loaded(&[&a, &b]);
    let original = command(TransferKind::Transfer, a.account.id, b.account.id, 100, "orig");
    let mut record = TransactionRecord::pending(TransactionId::generate(), &original, Utc::now());
    record.status = TransactionStatus::Completed;
    l.add_transaction(record.id, ("x".into(), "orig".into()), Ok(record.clone()));
    (l, a, b, record)
}

#[test]
fn a_reversal_completes_once_and_a_second_in_the_batch_fails() {
    let (l, a, b, record) = a_completed_transfer_of_100();
    let reversal = |key| {
        let r = TransferRequest::reversal(record.id, a.account.id, b.account.id, record.amount, Currency::USD, None);
        upstream(r, key)
    };
    let (outcomes, plan) = decide(l, &[reversal("r1"), reversal("r2")], Utc::now());
    let first = decided(&outcomes[0]);
    assert_eq!(first.status, TransactionStatus::Completed);
    assert_eq!(status(&outcomes[1]), (TransactionStatus::Failed, Some(FailureReason::AlreadyReversed)));
    assert_eq!(plan.reversed, [(record.id, first.id)]);
    let balances: Vec<_> = plan.entries.iter().map(|e| (e.account_id, e.balance_after.minor())).collect();
    assert_eq!(balances, [(b.account.id, 0), (a.account.id, 100)]);
}

#[test]
fn a_reversal_that_is_not_the_exact_mirror_fails() {
    let (l, a, b, record) = a_completed_transfer_of_100();
    let short = Amount::new(99).expect("amount");
    let partial = TransferRequest::reversal(record.id, a.account.id, b.account.id, short, Currency::USD, None);
    let of_nothing =
        TransferRequest::reversal(TransactionId::generate(), a.account.id, b.account.id, short, Currency::USD, None);
    let (outcomes, plan) = decide(l, &[upstream(partial, "p"), upstream(of_nothing, "n")], Utc::now());
    for outcome in &outcomes {
        assert_eq!(status(outcome), (TransactionStatus::Failed, Some(FailureReason::InvalidCommand)));
    }
    assert!(plan.entries.is_empty() && plan.reversed.is_empty());
}

#[test]
fn a_corrupt_account_fails_only_the_commands_that_touch_it() {
    let (a, b, c) = (account(100, 1), account(0, 0), account(0, 0));
    let mut l = loaded(&[&a, &b]);
    l.accounts.insert(
        c.account.id,
        Err(StoreError::Corrupt { collection: "accounts", id: c.account.id.to_string(), reason: "test".into() }),
    );
    let bad = recorded(&mut l, command(TransferKind::Transfer, a.account.id, c.account.id, 10, "bad"));
    let good = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 10, "good"));
    let (outcomes, plan) = decide(l, &[bad, good], Utc::now());
    assert!(matches!(&outcomes[0], Err(StoreError::Corrupt { .. })));
    assert_eq!(status(&outcomes[1]), (TransactionStatus::Completed, None));
    assert_eq!(plan.entries.len(), 2);
}

fn journal_command(legs: &[(&AccountHead, &AccountHead, i64)], key: &str) -> TransferCommand {
    let legs = legs
        .iter()
        .map(|(from, to, amount)| {
            let amount = Amount::new(*amount).expect("amount");
            ledgerflow_domain::Leg::new(from.account.id, to.account.id, amount, Currency::USD).expect("leg")
        })
        .collect();
    upstream(TransferRequest::journal(legs, None).expect("journal"), key)
}

#[test]
fn a_journal_whose_third_leg_fails_writes_nothing_and_names_the_leg() {
    let (a, b, c) = (account(100, 1), account(0, 0), account(5, 1));
    let journal = journal_command(&[(&a, &b, 60), (&b, &c, 10), (&c, &a, 500)], "split");
    // A later command of the batch sees the balances as if the journal had never been.
    let after = command(TransferKind::Transfer, a.account.id, c.account.id, 100, "after");
    let (outcomes, plan) = decide(loaded(&[&a, &b, &c]), &[journal, after], Utc::now());
    let failed = decided(&outcomes[0]);
    assert_eq!(
        (failed.status, failed.failure_reason),
        (TransactionStatus::Failed, Some(FailureReason::InsufficientFunds))
    );
    assert_eq!(failed.failed_leg, Some(2));
    assert_eq!(status(&outcomes[1]), (TransactionStatus::Completed, None));
    let moved: Vec<(AccountId, i64, i64)> =
        plan.entries.iter().map(|e| (e.account_id, e.seq, e.balance_after.minor())).collect();
    assert_eq!(moved, [(a.account.id, 2, 0), (c.account.id, 2, 105)], "only the transfer's entries");
    assert!(plan.account_writes.iter().all(|w| w.account != b.account.id), "b is untouched");
}

#[test]
fn a_journal_leg_spends_what_an_earlier_leg_credited() {
    let (a, b, c) = (account(100, 1), account(0, 0), account(0, 0));
    let journal = journal_command(&[(&a, &b, 100), (&b, &c, 30), (&b, &a, 70)], "chain");
    let (outcomes, plan) = decide(loaded(&[&a, &b, &c]), &[journal], Utc::now());
    let done = decided(&outcomes[0]);
    assert_eq!((done.status, done.failed_leg), (TransactionStatus::Completed, None));
    let entries: Vec<(Option<u16>, EntryType, AccountId, i64)> =
        plan.entries.iter().map(|e| (e.leg, e.entry_type, e.account_id, e.balance_after.minor())).collect();
    assert_eq!(
        entries,
        [
            (Some(0), EntryType::Debit, a.account.id, 0),
            (Some(0), EntryType::Credit, b.account.id, 100),
            (Some(1), EntryType::Debit, b.account.id, 70),
            (Some(1), EntryType::Credit, c.account.id, 30),
            (Some(2), EntryType::Debit, b.account.id, 0),
            (Some(2), EntryType::Credit, a.account.id, 70),
        ]
    );
    // b's three entries chain one after the other.
    let b_seqs: Vec<i64> = plan.entries.iter().filter(|e| e.account_id == b.account.id).map(|e| e.seq).collect();
    assert_eq!(b_seqs, [1, 2, 3]);
}

#[test]
fn an_entry_is_never_stamped_before_its_accounts_previous_entry() {
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
    let ahead = now + chrono::Duration::seconds(90);
    let (mut a, b) = (account(100, 1), account(0, 0));
    // The worker that wrote `a`'s latest entry had a clock 90 s ahead of this one's.
    a.last_at = Some(ahead);
    let first = command(TransferKind::Transfer, a.account.id, b.account.id, 10, "first");
    let second = command(TransferKind::Transfer, b.account.id, a.account.id, 5, "second");
    let (outcomes, plan) = decide(loaded(&[&a, &b]), &[first, second], now);
    assert!(outcomes.iter().all(|o| status(o).0 == TransactionStatus::Completed));
    let stamps = |id: AccountId| -> Vec<_> {
        plan.entries.iter().filter(|e| e.account_id == id).map(|e| (e.seq, e.created_at)).collect()
    };
    // `a`'s entries carry its previous entry's instant; `b`, whose history is empty, the
    // worker's own `now`, and the hash covers the instant written.
    assert_eq!(stamps(a.account.id), [(2, ahead), (3, ahead)]);
    assert_eq!(stamps(b.account.id), [(1, now), (2, now)]);
    for e in &plan.entries {
        assert_eq!(e.chain_fields().hash(), e.hash, "seq {} of {}", e.seq, e.account_id);
    }
}

/// `(type, transaction)` of each event a plan writes, in order.
fn events(plan: &Plan) -> Vec<(EventType, TransactionId)> {
    plan.events.iter().map(|e| (e.event_type, e.record.id)).collect()
}

#[test]
fn each_change_has_its_event_with_the_accounts_as_it_left_them() {
    let (a, b) = (account(100, 1), account(0, 0));
    let mut l = loaded(&[&a, &b]);
    let paid = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 30, "paid"));
    let short = recorded(&mut l, command(TransferKind::Transfer, a.account.id, b.account.id, 500, "short"));
    let repeat = paid.clone();
    let (outcomes, plan) = decide(l, &[paid, short, repeat], Utc::now());
    let (paid, short) = (decided(&outcomes[0]), decided(&outcomes[1]));
    // The repeat changed nothing, so it has no event.
    assert_eq!(events(&plan), [(EventType::Completed, paid.id), (EventType::Failed, short.id)]);
    let shown = |i: usize| -> Vec<(String, i64, i64, i64)> {
        plan.events[i].accounts.iter().map(|x| (x.account_id.clone(), x.balance, x.available, x.seq)).collect()
    };
    let (a_id, b_id) = (a.account.id.to_string(), b.account.id.to_string());
    assert_eq!(shown(0), [(a_id.clone(), 70, 70, 2), (b_id.clone(), 30, 30, 1)]);
    assert_eq!(shown(1), [(a_id, 70, 70, 2), (b_id, 30, 30, 1)], "as the batch stood when it failed");
    assert_eq!(plan.events[0].record.status, TransactionStatus::Completed);
}

#[test]
fn an_upstream_command_is_accepted_and_decided_in_one_plan() {
    let (a, b) = (account(100, 1), account(0, 0));
    let cmd = command(TransferKind::Transfer, a.account.id, b.account.id, 30, "payroll-7");
    let (outcomes, plan) = decide(loaded(&[&a, &b]), &[cmd.clone(), cmd], Utc::now());
    let id = decided(&outcomes[0]).id;
    assert_eq!(events(&plan), [(EventType::Accepted, id), (EventType::Completed, id)]);
    assert_eq!(plan.events[0].record.status, TransactionStatus::Pending);
    assert!(plan.events[0].accounts.is_empty());
}

#[test]
fn a_post_is_followed_by_its_holds_end_and_a_reversal_by_its_originals() {
    let (l, _, _, held) = a_held_hold_of_60();
    let post = settle_command(TransferKind::PostHold, &held, 60, "capture");
    let (outcomes, plan) = decide(l, &[post], Utc::now());
    let post = decided(&outcomes[0]).id;
    // An upstream post: created in this batch, so accepted first.
    let expected = [(EventType::Accepted, post), (EventType::Completed, post), (EventType::Posted, held.id)];
    assert_eq!(events(&plan), expected);
    assert_eq!(plan.events[2].record.resolved_by, Some(post));

    let (l, a, b, original) = a_completed_transfer_of_100();
    let undo = TransferRequest::reversal(original.id, a.account.id, b.account.id, original.amount, Currency::USD, None);
    let (outcomes, plan) = decide(l, &[upstream(undo, "undo")], Utc::now());
    let reversal = decided(&outcomes[0]).id;
    let expected =
        [(EventType::Accepted, reversal), (EventType::Completed, reversal), (EventType::Reversed, original.id)];
    assert_eq!(events(&plan), expected);
    assert_eq!(plan.events[2].record.reversed_by, Some(reversal));
}

#[test]
fn an_expiry_has_its_event() {
    let (l, a, _, held) = a_held_hold_of_60();
    let at = held.expires_at.expect("a hold expires");
    let (expired, plan) = expire(l, held.id, at);
    assert!(expired.expect("no error").is_some());
    assert_eq!(events(&plan), [(EventType::Expired, held.id)]);
    let shown = &plan.events[0].accounts[0];
    assert_eq!((shown.account_id.clone(), shown.available), (a.account.id.to_string(), 100), "released");
}
