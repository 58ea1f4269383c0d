//! The queue contract: transfer commands in, transfer results out (both version 1).
//!
//! Commands arrive from the gateway and from upstream systems that publish straight to the
//! queue, so [`TransferCommand::parse`] trusts nothing: it takes raw bytes and returns either a
//! fully valid command or a [`CommandError`] that still carries whatever identifies the
//! transaction, so a FAILED result can be reported for it. The JSON Schema of both messages is
//! in `schemas/` at the repository root.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::fields::{opt_str, parse_object, req_str};
use crate::{
    AccountId, Amount, Currency, Description, DomainError, FailureReason, HoldTimeout, IdempotencyKey, Initiator, Leg,
    Metadata, TransactionId, TransactionStatus, TransferKind, TransferRequest,
};

/// The only command and result version this build speaks.
pub const COMMAND_VERSION: u64 = 1;

/// Commands larger than this are refused unread. A typical one is a few hundred bytes; the
/// largest legal one (16 metadata keys of 64 characters with values of 512, a description of
/// 500 and 16 journal legs) is under 110 KiB even with every character written as a JSON
/// `\uXXXX` escape pair (12 bytes a character), so 128 KiB refuses no legal command.
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;

/// A validated transfer command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferCommand {
    /// Set when the gateway recorded the transaction first; absent for upstream publishers,
    /// whose transaction the worker creates, scoped by `initiator`.
    pub transaction_id: Option<TransactionId>,
    pub request: TransferRequest,
    pub idempotency_key: IdempotencyKey,
    pub initiator: Initiator,
    pub requested_at: DateTime<Utc>,
}

/// A command that could not be accepted, with whatever could still be read from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command: {reason}")]
pub struct CommandError {
    pub reason: String,
    pub transaction_id: Option<TransactionId>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub initiator: Option<Initiator>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CommandWire<'a> {
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<TransactionId>,
    kind: TransferKind,
    // A journal's (or its reversal's) movements are its legs alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    from_account: Option<AccountId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_account: Option<AccountId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<Currency>,
    #[serde(skip_serializing_if = "<[Leg]>::is_empty")]
    legs: &'a [Leg],
    idempotency_key: &'a IdempotencyKey,
    initiator: &'a Initiator,
    requested_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a Description>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reverses: Option<TransactionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hold: Option<TransactionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<HoldTimeout>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Metadata>,
}

impl TransferCommand {
    /// The message body as published.
    pub fn to_json(&self) -> Vec<u8> {
        let r = &self.request;
        let single = r.legs.is_empty();
        let wire = CommandWire {
            version: COMMAND_VERSION,
            transaction_id: self.transaction_id,
            kind: r.kind,
            from_account: single.then_some(r.from),
            to_account: single.then_some(r.to),
            amount: single.then_some(r.amount),
            currency: single.then_some(r.currency),
            legs: &r.legs,
            idempotency_key: &self.idempotency_key,
            initiator: &self.initiator,
            requested_at: self.requested_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            description: r.description.as_ref(),
            reverses: r.reverses,
            hold: r.hold,
            timeout_seconds: r.timeout,
            metadata: r.metadata.as_ref(),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Parses and validates a raw message body that must be a complete command: a settlement
    /// that leaves its accounts to its hold is refused here (the worker reads every message
    /// with [`Command::parse`]).
    pub fn parse(body: &[u8]) -> Result<Self, CommandError> {
        match Command::parse(body)? {
            Command::Complete(cmd) => Ok(cmd),
            Command::Settle(settle) => Err(CommandError {
                reason: "fromAccount, toAccount, currency and amount are required here".to_owned(),
                transaction_id: settle.transaction_id,
                idempotency_key: Some(settle.idempotency_key),
                initiator: Some(settle.initiator),
            }),
        }
    }

    fn from_object(obj: &Map<String, Value>) -> Result<Command, DomainError> {
        match obj.get("version") {
            Some(v) if v.as_u64() == Some(COMMAND_VERSION) => {}
            None | Some(Value::Null) => return Err(DomainError::Missing { field: "version" }),
            Some(_) => return Err(DomainError::invalid("version", format!("must be {COMMAND_VERSION}"))),
        }
        let transaction_id =
            opt_str(obj, "transactionId")?.map(|s| TransactionId::parse_field("transactionId", s)).transpose()?;
        let kind: TransferKind = req_str(obj, "kind")?.parse()?;
        let currency = opt_str(obj, "currency")?.map(str::parse::<Currency>).transpose()?;
        let from = opt_str(obj, "fromAccount")?.map(|s| AccountId::parse_field("fromAccount", s)).transpose()?;
        let to = opt_str(obj, "toAccount")?.map(|s| AccountId::parse_field("toAccount", s)).transpose()?;
        let amount = match obj.get("amount") {
            None | Some(Value::Null) => None,
            value => Some(Amount::from_json("amount", value)?),
        };
        let idempotency_key: IdempotencyKey = req_str(obj, "idempotencyKey")?.parse()?;
        let initiator: Initiator = req_str(obj, "initiator")?.parse()?;
        let requested_at = DateTime::parse_from_rfc3339(req_str(obj, "requestedAt")?)
            .map_err(|_| DomainError::invalid("requestedAt", "must be an RFC 3339 timestamp"))?
            .with_timezone(&Utc);
        let description = opt_str(obj, "description")?.map(str::parse::<Description>).transpose()?;
        // A command without a recorded transaction can only come from an upstream system:
        // letting it name a user would let a publisher act in that user's name.
        if transaction_id.is_none() && matches!(initiator, Initiator::User(_)) {
            return Err(DomainError::invalid("initiator", "must be service:<name> when transactionId is absent"));
        }
        let reverses = opt_str(obj, "reverses")?.map(|s| TransactionId::parse_field("reverses", s)).transpose()?;
        let hold = opt_str(obj, "hold")?.map(|s| TransactionId::parse_field("hold", s)).transpose()?;
        let timeout = match obj.get("timeoutSeconds") {
            None | Some(Value::Null) => None,
            Some(v) => Some(HoldTimeout::from_json_value(v)?),
        };
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(v) => Metadata::from_json_value(v)?.non_empty(),
        };
        if reverses.is_some() && kind != TransferKind::Reversal {
            return Err(DomainError::invalid("reverses", "is only allowed on a REVERSAL"));
        }
        if hold.is_some() && !kind.resolves_hold() {
            return Err(DomainError::invalid("hold", "is only allowed on a POST_HOLD or VOID_HOLD"));
        }
        if timeout.is_some() && kind != TransferKind::Hold {
            return Err(DomainError::invalid("timeoutSeconds", "is only allowed on a HOLD"));
        }
        let legs = legs(obj)?;
        if let Some(legs) = legs {
            if !matches!(kind, TransferKind::Journal | TransferKind::Reversal) {
                return Err(DomainError::invalid("legs", "are only allowed on a JOURNAL or its REVERSAL"));
            }
            let given = [("fromAccount", from.is_some()), ("toAccount", to.is_some()), ("amount", amount.is_some())];
            if let Some((field, _)) = given.into_iter().chain([("currency", currency.is_some())]).find(|(_, g)| *g) {
                return Err(DomainError::invalid(field, "is not allowed beside legs: each leg names its own"));
            }
            let mut request = TransferRequest::journal(legs, description)?.with_metadata(metadata);
            if kind == TransferKind::Reversal {
                let original = reverses.ok_or(DomainError::Missing { field: "reverses" })?;
                request.kind = TransferKind::Reversal;
                request.reverses = Some(original);
            }
            return Ok(Command::Complete(Self { transaction_id, request, idempotency_key, initiator, requested_at }));
        }
        if kind == TransferKind::Journal {
            return Err(DomainError::Missing { field: "legs" });
        }
        if kind.resolves_hold() {
            let hold = hold.ok_or(DomainError::Missing { field: "hold" })?;
            if description.is_some() {
                return Err(DomainError::invalid("description", "is not allowed on a POST_HOLD or VOID_HOLD"));
            }
            let settle = SettleCommand {
                transaction_id,
                kind,
                hold,
                from,
                to,
                currency,
                amount,
                idempotency_key,
                initiator,
                requested_at,
                metadata,
            };
            return Ok(match (from, to, currency, amount) {
                (Some(from), Some(to), Some(currency), Some(amount)) => {
                    let request = TransferRequest::settle(kind, hold, from, to, amount, currency)?;
                    Command::Complete(settle.with(request))
                }
                _ => Command::Settle(settle),
            });
        }
        let currency = currency.ok_or(DomainError::Missing { field: "currency" })?;
        let from = match (kind, from) {
            (_, Some(from)) => from,
            (TransferKind::InitialFunds, None) => AccountId::funding(currency),
            (_, None) => return Err(DomainError::Missing { field: "fromAccount" }),
        };
        let to = to.ok_or(DomainError::Missing { field: "toAccount" })?;
        let amount = amount.ok_or(DomainError::Missing { field: "amount" })?;
        let request = match kind {
            TransferKind::Reversal => {
                let original = reverses.ok_or(DomainError::Missing { field: "reverses" })?;
                if from == to {
                    return Err(DomainError::invalid("toAccount", "must differ from fromAccount"));
                }
                TransferRequest::reversal(original, to, from, amount, currency, description)
            }
            TransferKind::Hold => {
                let timeout = timeout.ok_or(DomainError::Missing { field: "timeoutSeconds" })?;
                TransferRequest::hold(from, to, amount, currency, description, timeout)?
            }
            TransferKind::PostHold
            | TransferKind::VoidHold
            | TransferKind::Journal
            | TransferKind::Transfer
            | TransferKind::InitialFunds => TransferRequest::new(kind, from, to, amount, currency, description)?,
        };
        let request = request.with_metadata(metadata);
        Ok(Command::Complete(Self { transaction_id, request, idempotency_key, initiator, requested_at }))
    }
}

/// A command's `legs`, if it has any: an array of [`Leg`]s, at most [`crate::journal::MAX_LEGS`].
fn legs(obj: &Map<String, Value>) -> Result<Option<Vec<Leg>>, DomainError> {
    match obj.get("legs") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            crate::journal::check_leg_count(items.len())?;
            items.iter().enumerate().map(|(i, item)| Leg::from_json(i, item)).collect::<Result<_, _>>().map(Some)
        }
        Some(_) => Err(DomainError::invalid("legs", "must be an array of legs")),
    }
}

/// A command as read off the queue: complete, or the settlement of a hold that names the hold
/// but not all of its accounts, currency and amount, which the worker takes from the hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Complete(TransferCommand),
    Settle(SettleCommand),
}

impl Command {
    /// Parses and validates a raw message body (see [`TransferCommand::parse`]).
    pub fn parse(body: &[u8]) -> Result<Self, CommandError> {
        if body.len() > MAX_COMMAND_BYTES {
            return Err(CommandError::bare(format!("body of {} bytes exceeds {MAX_COMMAND_BYTES}", body.len())));
        }
        let obj = parse_object(body).map_err(|e| CommandError::bare(e.to_string()))?;
        // Salvage the identifying fields first, so every later failure can still be reported
        // against the right transaction.
        let transaction_id = opt_str(&obj, "transactionId").ok().flatten().and_then(|s| s.parse().ok());
        let idempotency_key = opt_str(&obj, "idempotencyKey").ok().flatten().and_then(|s| s.parse().ok());
        let initiator = opt_str(&obj, "initiator").ok().flatten().and_then(|s| s.parse().ok());
        let fail = |e: DomainError| CommandError {
            reason: e.to_string(),
            transaction_id,
            idempotency_key: idempotency_key.clone(),
            initiator: initiator.clone(),
        };
        TransferCommand::from_object(&obj).map_err(fail)
    }
}

/// A POST_HOLD or VOID_HOLD from an upstream system that names its hold (and for a post,
/// perhaps an amount) but leaves the rest to the hold. What it does give must agree with the
/// hold: [`crate::holds::may_settle`] judges the completed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleCommand {
    pub transaction_id: Option<TransactionId>,
    pub kind: TransferKind,
    pub hold: TransactionId,
    pub from: Option<AccountId>,
    pub to: Option<AccountId>,
    pub currency: Option<Currency>,
    /// A post's amount (default: all that is held); a void's is always the held amount.
    pub amount: Option<Amount>,
    pub idempotency_key: IdempotencyKey,
    pub initiator: Initiator,
    pub requested_at: DateTime<Utc>,
    /// The settlement's own labels (a hold keeps its own).
    pub metadata: Option<Metadata>,
}

impl SettleCommand {
    /// The complete command, given the hold's own request (kind HOLD); what this command
    /// names itself wins, and is judged against the hold when the settlement is decided.
    pub fn complete(&self, hold: &TransferRequest) -> Result<TransferCommand, DomainError> {
        let amount = self.amount.unwrap_or(hold.amount);
        let request = TransferRequest::settle(
            self.kind,
            self.hold,
            self.from.unwrap_or(hold.from),
            self.to.unwrap_or(hold.to),
            amount,
            self.currency.unwrap_or(hold.currency),
        )?;
        Ok(self.clone().with(request))
    }

    fn with(self, request: TransferRequest) -> TransferCommand {
        TransferCommand {
            transaction_id: self.transaction_id,
            request: request.with_metadata(self.metadata),
            idempotency_key: self.idempotency_key,
            initiator: self.initiator,
            requested_at: self.requested_at,
        }
    }
}

impl CommandError {
    fn bare(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), transaction_id: None, idempotency_key: None, initiator: None }
    }
}

/// The outcome of a command, published on the result queue once it is terminal.
///
/// `transactionId` is absent only for a command so broken that no transaction could be
/// identified; `idempotencyKey` and `initiator` are echoed when readable so upstream
/// publishers can correlate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferResult {
    pub version: u64,
    pub transaction_id: Option<TransactionId>,
    pub status: TransactionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// For a FAILED journal: the index of the leg that failed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_leg: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Initiator>,
    /// The transaction's metadata, when it has any, so that a consumer of results can route
    /// an outcome by its own labels without a look-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl TransferResult {
    pub fn new(
        transaction_id: Option<TransactionId>,
        status: TransactionStatus,
        failure_reason: Option<FailureReason>,
        completed_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            version: COMMAND_VERSION,
            transaction_id,
            status,
            failure_reason,
            completed_at: completed_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            failed_leg: None,
            idempotency_key: None,
            initiator: None,
            metadata: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upstream() -> Value {
        json!({
            "version": 1,
            "kind": "TRANSFER",
            "fromAccount": "0190a0a0-0000-7000-8000-000000000001",
            "toAccount": "0190a0a0-0000-7000-8000-000000000002",
            "amount": 1250,
            "currency": "USD",
            "idempotencyKey": "payroll-42",
            "initiator": "service:payroll",
            "requestedAt": "2026-11-24T10:00:00Z"
        })
    }

    fn parse(v: &Value) -> Result<TransferCommand, CommandError> {
        TransferCommand::parse(&serde_json::to_vec(v).expect("json"))
    }

    #[test]
    fn a_valid_upstream_command_parses_and_round_trips() {
        let cmd = parse(&upstream()).expect("valid");
        assert_eq!(cmd.request.amount.minor(), 1250);
        assert_eq!(TransferCommand::parse(&cmd.to_json()), Ok(cmd));
    }

    #[test]
    fn initial_funds_default_to_the_funding_account() {
        let mut v = upstream();
        v["kind"] = json!("INITIAL_FUNDS");
        v["fromAccount"] = Value::Null;
        let cmd = parse(&v).expect("valid");
        assert_eq!(cmd.request.from, AccountId::funding(Currency::USD));
    }

    #[test]
    fn hostile_commands_are_refused_with_a_reason_and_keep_their_identity() {
        let cases: Vec<(&str, Value)> = vec![
            ("amount", json!(-5)),
            ("amount", json!(1.5)),
            ("amount", json!("100")),
            ("amount", json!(10_000_000_000_000_000_i64)),
            ("version", json!(2)),
            ("currency", json!("usd")),
            ("toAccount", json!("not-a-uuid")),
            ("toAccount", json!("0190a0a0-0000-7000-8000-000000000001")),
            ("requestedAt", json!("yesterday")),
            ("initiator", json!("0190a0a0-0000-7000-8000-00000000000f")),
            ("kind", json!(7)),
        ];
        for (field, value) in cases {
            let mut v = upstream();
            v[field] = value.clone();
            let err = parse(&v).expect_err(&format!("{field}={value} must be refused"));
            assert!(err.reason.contains(field), "{field}: {}", err.reason);
            if field != "idempotencyKey" && field != "initiator" {
                assert_eq!(err.idempotency_key.as_ref().map(IdempotencyKey::as_str), Some("payroll-42"));
            }
        }
        for junk in [&b"not json"[..], b"[]", b"null", b"{}", &[0xff, 0xfe]] {
            assert!(TransferCommand::parse(junk).is_err());
        }
        assert!(TransferCommand::parse(&vec![b' '; MAX_COMMAND_BYTES + 1]).is_err());
    }

    #[test]
    fn holds_and_their_settlements_parse_and_round_trip() {
        let mut v = upstream();
        v["kind"] = json!("HOLD");
        assert_eq!(parse(&v).map_err(|e| e.reason), Err("timeoutSeconds is required".to_owned()));
        v["timeoutSeconds"] = json!(90);
        let hold = parse(&v).expect("valid hold");
        assert_eq!(hold.request.timeout.map(HoldTimeout::seconds), Some(90));
        assert_eq!(TransferCommand::parse(&hold.to_json()), Ok(hold));
        for bad in [json!(0), json!(2_592_001), json!(1.5), json!("60")] {
            v["timeoutSeconds"] = bad.clone();
            assert!(parse(&v).expect_err(&format!("{bad}")).reason.contains("timeoutSeconds"));
        }

        let mut post = upstream();
        post["kind"] = json!("POST_HOLD");
        assert_eq!(parse(&post).map_err(|e| e.reason), Err("hold is required".to_owned()));
        post["hold"] = json!("0190a0a0-0000-7000-8000-0000000000aa");
        let settle = parse(&post).expect("valid post");
        assert_eq!(TransferCommand::parse(&settle.to_json()), Ok(settle));
        post["timeoutSeconds"] = json!(5);
        assert!(parse(&post).expect_err("a timeout on a post").reason.contains("timeoutSeconds"));
        let mut transfer = upstream();
        transfer["hold"] = json!("0190a0a0-0000-7000-8000-0000000000aa");
        assert!(parse(&transfer).expect_err("a hold on a transfer").reason.contains("hold"));
    }

    #[test]
    fn a_settlement_naming_only_its_hold_is_completed_from_the_hold() {
        let mut hold = upstream();
        hold["kind"] = json!("HOLD");
        hold["timeoutSeconds"] = json!(60);
        let held = parse(&hold).expect("a hold").request;
        let post = json!({
            "version": 1, "kind": "POST_HOLD", "hold": "0190a0a0-0000-7000-8000-0000000000aa", "amount": 500,
            "idempotencyKey": "capture-1", "initiator": "service:payroll", "requestedAt": "2026-11-24T10:00:00Z",
        });
        let Ok(Command::Settle(settle)) = Command::parse(&serde_json::to_vec(&post).expect("json")) else {
            panic!("a settlement to complete")
        };
        let cmd = settle.complete(&held).expect("completed");
        assert_eq!((cmd.request.from, cmd.request.to, cmd.request.currency), (held.from, held.to, held.currency));
        assert_eq!((cmd.request.amount.minor(), cmd.request.kind), (500, TransferKind::PostHold));
        // Sent complete, the same settlement is the same command (and the same fingerprint).
        assert_eq!(TransferCommand::parse(&cmd.to_json()), Ok(cmd.clone()));
        let mut void = post.clone();
        void["kind"] = json!("VOID_HOLD");
        void["amount"] = Value::Null;
        let Ok(Command::Settle(settle)) = Command::parse(&serde_json::to_vec(&void).expect("json")) else {
            panic!("a void to complete")
        };
        assert_eq!(settle.complete(&held).expect("completed").request.amount, held.amount);
        assert!(TransferCommand::parse(&serde_json::to_vec(&void).expect("json")).is_err());
    }

    #[test]
    fn metadata_rides_every_kind_of_command_and_is_refused_by_key() {
        let mut v = upstream();
        v["metadata"] = json!({"order": "A-17", "batch": "7"});
        let cmd = parse(&v).expect("valid");
        assert_eq!(cmd.request.metadata.as_ref().and_then(|m| m.get("order")), Some("A-17"));
        assert_eq!(TransferCommand::parse(&cmd.to_json()), Ok(cmd.clone()));
        v["metadata"] = json!({});
        assert_eq!(parse(&v).expect("valid").request.metadata, None, "{{}} is none");
        v["metadata"] = json!({"bad key": "x"});
        let err = parse(&v).expect_err("a bad key");
        assert!(err.reason.starts_with("metadata key \"bad key\""), "{}", err.reason);
        assert_eq!(err.idempotency_key.as_ref().map(IdempotencyKey::as_str), Some("payroll-42"));
        let post = json!({
            "version": 1, "kind": "POST_HOLD", "hold": "0190a0a0-0000-7000-8000-0000000000aa",
            "idempotencyKey": "capture-1", "initiator": "service:payroll", "requestedAt": "2026-11-24T10:00:00Z",
            "metadata": {"capture": "c-1"},
        });
        let Ok(Command::Settle(settle)) = Command::parse(&serde_json::to_vec(&post).expect("json")) else {
            panic!("a settlement to complete")
        };
        let mut hold = upstream();
        hold["kind"] = json!("HOLD");
        hold["timeoutSeconds"] = json!(60);
        hold["metadata"] = json!({"order": "A-17"});
        let held = parse(&hold).expect("a hold").request;
        let completed = settle.complete(&held).expect("completed");
        assert_eq!(completed.request.metadata.as_ref().and_then(|m| m.get("capture")), Some("c-1"));
        assert_eq!(completed.request.metadata.as_ref().and_then(|m| m.get("order")), None, "the hold keeps its own");
    }

    #[test]
    fn the_largest_legal_metadata_fits_a_command_even_fully_escaped() {
        let mut v = upstream();
        let value = "\u{1f600}".repeat(512);
        let metadata: serde_json::Map<String, Value> = (0..16).map(|i| (format!("{i:0>64}"), json!(value))).collect();
        v["metadata"] = Value::Object(metadata);
        v["description"] = json!("\u{1f600}".repeat(500));
        let escaped = serde_json::to_string(&v).expect("json").replace('\u{1f600}', "\\ud83d\\ude00");
        assert!(escaped.len() < MAX_COMMAND_BYTES - 16 * 1024, "{} bytes leave room for legs", escaped.len());
        assert!(TransferCommand::parse(escaped.as_bytes()).is_ok());
    }

    #[test]
    fn a_result_serialises_with_camel_case_and_no_empty_fields() {
        let r = TransferResult::new(None, TransactionStatus::Failed, Some(FailureReason::InvalidCommand), None);
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            json!({"version": 1, "transactionId": null, "status": "FAILED", "failureReason": "INVALID_COMMAND"})
        );
    }
}
