//! Upstream services and what each may do.
//!
//! An upstream system publishes commands straight to the queue. The broker vouches for who
//! published a message (RabbitMQ checks the AMQP `user_id` property against the connection's
//! user), and a registered [`Service`] ties that broker user to a service name and a
//! [`Grant`]: which command kinds it may send and which accounts it may debit. Nothing is
//! granted by default; minting money (`INITIAL_FUNDS`) and undoing payments (`REVERSAL`) are
//! kinds like any other, granted only by name.
//!
//! The rules are pure: the worker looks up the service and, when the grant names owners, the
//! owner of the account to debit, then asks [`Service::may_send`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::{AccountId, DomainError, Initiator, ServiceName, TransferKind, TransferRequest, UserId};

/// A RabbitMQ user name, as the AMQP `user_id` property carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerUser(String);

impl BrokerUser {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BrokerUser {
    type Err = DomainError;

    /// RabbitMQ accepts almost any name; these are the ones an operator can type and a log
    /// line can show unescaped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok =
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::invalid("brokerUser", "must be 1 to 128 of [A-Za-z0-9._@-]"))
        }
    }
}

impl fmt::Display for BrokerUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a service may do. Empty: nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Command kinds it may send.
    pub kinds: BTreeSet<TransferKind>,
    /// Accounts it may debit, by id.
    pub accounts: BTreeSet<AccountId>,
    /// Owners every account of which it may debit.
    pub owners: BTreeSet<UserId>,
    /// Every client account: for a system that acts for all customers (a card processor, a
    /// core-banking bridge). Only ever granted by name, like everything else.
    pub any_account: bool,
}

impl Grant {
    /// Adds everything `more` grants.
    pub fn extend(&mut self, more: &Grant) {
        self.kinds.extend(more.kinds.iter().copied());
        self.accounts.extend(more.accounts.iter().copied());
        self.owners.extend(more.owners.iter().copied());
        self.any_account |= more.any_account;
    }

    /// Takes away everything `less` names.
    pub fn remove(&mut self, less: &Grant) {
        self.kinds.retain(|k| !less.kinds.contains(k));
        self.accounts.retain(|a| !less.accounts.contains(a));
        self.owners.retain(|o| !less.owners.contains(o));
        self.any_account &= !less.any_account;
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.accounts.is_empty() && self.owners.is_empty() && !self.any_account
    }
}

/// A registered upstream system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: ServiceName,
    /// The broker user it publishes as; one service per broker user.
    pub broker_user: BrokerUser,
    /// A disabled service's commands are all refused, those already queued included.
    pub enabled: bool,
    pub grant: Grant,
}

/// Why a command from the queue may not be carried out. Every refusal is reported as FAILED
/// `UNAUTHORIZED` and dead-lettered with [`Unauthorized::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    #[error("the message has no user_id, so its publisher is unknown")]
    Anonymous,
    #[error("broker user {0} is not a registered service")]
    UnknownPublisher(String),
    #[error("service {0} is disabled")]
    Disabled(ServiceName),
    #[error("service {service} may not act as {claimed}")]
    NotItsInitiator { service: ServiceName, claimed: Initiator },
    #[error("only LedgerFlow's own processes may send commands for recorded transactions, not broker user {0}")]
    RecordedTransaction(String),
    #[error("service {service} may not send {kind}")]
    KindNotGranted { service: ServiceName, kind: TransferKind },
    #[error("service {service} may not debit account {account}")]
    DebitNotGranted { service: ServiceName, account: AccountId },
}

impl Unauthorized {
    /// A stable code for metrics and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            Unauthorized::Anonymous => "ANONYMOUS",
            Unauthorized::UnknownPublisher(_) => "UNKNOWN_PUBLISHER",
            Unauthorized::Disabled(_) => "SERVICE_DISABLED",
            Unauthorized::NotItsInitiator { .. } => "NOT_ITS_INITIATOR",
            Unauthorized::RecordedTransaction(_) => "RECORDED_TRANSACTION",
            Unauthorized::KindNotGranted { .. } => "KIND_NOT_GRANTED",
            Unauthorized::DebitNotGranted { .. } => "DEBIT_NOT_GRANTED",
        }
    }
}

/// The client accounts `request` takes money out of, which a grant must cover, and whether it
/// also draws on a funding account. INITIAL_FUNDS draws on the currency's funding account and a
/// journal's leg may (the INITIAL_FUNDS grant is the permission for both); a VOID_HOLD moves no
/// money.
fn debits(request: &TransferRequest) -> (Vec<AccountId>, bool) {
    match request.kind {
        TransferKind::InitialFunds => (Vec::new(), true),
        TransferKind::VoidHold => (Vec::new(), false),
        TransferKind::Journal => {
            let debited = request.debited_accounts();
            let funding =
                |id: &AccountId| request.legs.iter().any(|l| l.from == *id && *id == AccountId::funding(l.currency));
            let draws = debited.iter().any(funding);
            (debited.into_iter().filter(|id| !funding(id)).collect(), draws)
        }
        TransferKind::Transfer | TransferKind::Reversal | TransferKind::Hold | TransferKind::PostHold => {
            (request.debited_accounts(), false)
        }
    }
}

impl Service {
    /// Whether this service may publish commands in `initiator`'s name: only in its own, and
    /// only while enabled.
    pub fn may_act_as(&self, initiator: &Initiator) -> Result<(), Unauthorized> {
        if !self.enabled {
            return Err(Unauthorized::Disabled(self.name.clone()));
        }
        match initiator {
            Initiator::Service(name) if *name == self.name => Ok(()),
            claimed => Err(Unauthorized::NotItsInitiator { service: self.name.clone(), claimed: claimed.clone() }),
        }
    }

    /// The debited accounts whose owners [`Service::may_send`] needs: those not granted by id,
    /// when the grant names owners.
    pub fn owners_needed(&self, request: &TransferRequest) -> Vec<AccountId> {
        if self.grant.any_account || self.grant.owners.is_empty() {
            return Vec::new();
        }
        debits(request).0.into_iter().filter(|a| !self.grant.accounts.contains(a)).collect()
    }

    /// Whether this service may send `request`, given the owners of its debited accounts (as
    /// far as the caller looked them up; see [`Service::owners_needed`]).
    pub fn may_send(
        &self,
        request: &TransferRequest,
        owners: &BTreeMap<AccountId, UserId>,
    ) -> Result<(), Unauthorized> {
        if !self.enabled {
            return Err(Unauthorized::Disabled(self.name.clone()));
        }
        let kind_granted = |kind| {
            if self.grant.kinds.contains(&kind) {
                Ok(())
            } else {
                Err(Unauthorized::KindNotGranted { service: self.name.clone(), kind })
            }
        };
        kind_granted(request.kind)?;
        let (accounts, draws_on_funding) = debits(request);
        if draws_on_funding {
            kind_granted(TransferKind::InitialFunds)?;
        }
        for account in accounts {
            let covered = self.grant.any_account
                || self.grant.accounts.contains(&account)
                || owners.get(&account).is_some_and(|owner| self.grant.owners.contains(owner));
            if !covered {
                return Err(Unauthorized::DebitNotGranted { service: self.name.clone(), account });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Amount, Currency};

    fn service(grant: Grant) -> Service {
        Service {
            name: "payroll".parse().expect("name"),
            broker_user: "svc-payroll".parse().expect("user"),
            enabled: true,
            grant,
        }
    }

    fn request(kind: TransferKind, from: AccountId) -> TransferRequest {
        let mut r = TransferRequest::new(
            TransferKind::Transfer,
            from,
            AccountId::generate(),
            Amount::new(100).expect("amount"),
            "USD".parse::<Currency>().expect("currency"),
            None,
        )
        .expect("request");
        r.kind = kind;
        r
    }

    fn kinds(kinds: &[TransferKind]) -> BTreeSet<TransferKind> {
        kinds.iter().copied().collect()
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let s = service(Grant::default());
        for &kind in TransferKind::ALL {
            let refused = s.may_send(&request(kind, AccountId::generate()), &BTreeMap::new());
            assert!(matches!(refused, Err(Unauthorized::KindNotGranted { .. })), "{kind}: {refused:?}");
        }
    }

    #[test]
    fn pays_only_from_granted_accounts() {
        let payroll = AccountId::generate();
        let s =
            service(Grant { kinds: kinds(&[TransferKind::Transfer]), accounts: [payroll].into(), ..Grant::default() });
        assert_eq!(s.may_send(&request(TransferKind::Transfer, payroll), &BTreeMap::new()), Ok(()));
        let other = AccountId::generate();
        assert_eq!(
            s.may_send(&request(TransferKind::Transfer, other), &BTreeMap::new()),
            Err(Unauthorized::DebitNotGranted { service: s.name.clone(), account: other })
        );
        assert!(s.owners_needed(&request(TransferKind::Transfer, other)).is_empty());
    }

    #[test]
    fn an_any_account_grant_covers_every_client_account() {
        let s = service(Grant { kinds: kinds(&[TransferKind::Transfer]), any_account: true, ..Grant::default() });
        let r = request(TransferKind::Transfer, AccountId::generate());
        assert!(s.owners_needed(&r).is_empty());
        assert_eq!(s.may_send(&r, &BTreeMap::new()), Ok(()));
    }

    #[test]
    fn an_owner_grant_covers_that_owners_accounts() {
        let owner = UserId::generate();
        let s = service(Grant {
            kinds: kinds(&[TransferKind::Hold, TransferKind::PostHold]),
            owners: [owner].into(),
            ..Grant::default()
        });
        let hold = request(TransferKind::Hold, AccountId::generate());
        assert_eq!(s.owners_needed(&hold), vec![hold.from]);
        assert_eq!(s.may_send(&hold, &[(hold.from, owner)].into()), Ok(()));
        let stranger = [(hold.from, UserId::generate())].into();
        assert!(matches!(s.may_send(&hold, &stranger), Err(Unauthorized::DebitNotGranted { .. })));
        // A funding account has no owner.
        assert!(matches!(s.may_send(&hold, &BTreeMap::new()), Err(Unauthorized::DebitNotGranted { .. })));
    }

    #[test]
    fn minting_and_voiding_need_only_their_kind() {
        let s =
            service(Grant { kinds: kinds(&[TransferKind::InitialFunds, TransferKind::VoidHold]), ..Grant::default() });
        for kind in [TransferKind::InitialFunds, TransferKind::VoidHold] {
            let r = request(kind, AccountId::generate());
            assert!(s.owners_needed(&r).is_empty());
            assert_eq!(s.may_send(&r, &BTreeMap::new()), Ok(()));
        }
        // A reversal debits a client account like a transfer.
        let s = service(Grant { kinds: kinds(&[TransferKind::Reversal]), ..Grant::default() });
        assert!(matches!(
            s.may_send(&request(TransferKind::Reversal, AccountId::generate()), &BTreeMap::new()),
            Err(Unauthorized::DebitNotGranted { .. })
        ));
    }

    #[test]
    fn acts_only_as_itself_and_only_while_enabled() {
        let mut s = service(Grant { kinds: kinds(&[TransferKind::Transfer]), ..Grant::default() });
        assert_eq!(s.may_act_as(&"service:payroll".parse().expect("initiator")), Ok(()));
        let other: Initiator = "service:treasury".parse().expect("initiator");
        assert_eq!(
            s.may_act_as(&other),
            Err(Unauthorized::NotItsInitiator { service: s.name.clone(), claimed: other.clone() })
        );
        let user = Initiator::User(UserId::generate());
        assert!(matches!(s.may_act_as(&user), Err(Unauthorized::NotItsInitiator { .. })));
        s.enabled = false;
        assert_eq!(
            s.may_act_as(&"service:payroll".parse().expect("initiator")),
            Err(Unauthorized::Disabled(s.name.clone()))
        );
        let anything = request(TransferKind::Transfer, AccountId::generate());
        assert_eq!(s.may_send(&anything, &BTreeMap::new()), Err(Unauthorized::Disabled(s.name.clone())));
    }

    #[test]
    fn grants_extend_and_shrink() {
        let a = AccountId::generate();
        let mut g = Grant::default();
        g.extend(&Grant {
            kinds: kinds(&[TransferKind::Transfer, TransferKind::Hold]),
            accounts: [a].into(),
            ..Grant::default()
        });
        g.remove(&Grant { kinds: kinds(&[TransferKind::Hold]), ..Grant::default() });
        assert_eq!(g.kinds, kinds(&[TransferKind::Transfer]));
        assert_eq!(g.accounts, [a].into());
        g.extend(&Grant { any_account: true, ..Grant::default() });
        assert!(g.any_account);
        g.remove(&Grant { any_account: true, ..Grant::default() });
        assert!(!g.any_account);
        g.remove(&Grant { kinds: kinds(&[TransferKind::Transfer]), accounts: [a].into(), ..Grant::default() });
        assert!(g.is_empty());
    }

    #[test]
    fn broker_users_are_names_an_operator_can_type() {
        assert_eq!("svc-payroll".parse::<BrokerUser>().expect("user").as_str(), "svc-payroll");
        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            assert!(bad.parse::<BrokerUser>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_journal_needs_every_debited_account_granted_and_initial_funds_to_draw_on_funding() {
        use crate::Leg;
        let (payroll, fees, stranger) = (AccountId::generate(), AccountId::generate(), AccountId::generate());
        let leg = |from, to| Leg::new(from, to, Amount::new(5).expect("5"), Currency::USD).expect("leg");
        let journal = |legs| TransferRequest::journal(legs, None).expect("journal");
        let s = service(Grant {
            kinds: kinds(&[TransferKind::Journal]),
            accounts: [payroll, fees].into(),
            ..Grant::default()
        });
        let none = BTreeMap::new();
        assert_eq!(s.may_send(&journal(vec![leg(payroll, stranger), leg(fees, stranger)]), &none), Ok(()));
        // The second leg debits an account the grant does not cover.
        assert_eq!(
            s.may_send(&journal(vec![leg(payroll, fees), leg(stranger, payroll)]), &none),
            Err(Unauthorized::DebitNotGranted { service: s.name.clone(), account: stranger })
        );
        let funding = AccountId::funding(Currency::USD);
        let issuing = journal(vec![leg(funding, payroll), leg(payroll, fees)]);
        assert_eq!(
            s.may_send(&issuing, &none),
            Err(Unauthorized::KindNotGranted { service: s.name.clone(), kind: TransferKind::InitialFunds })
        );
        let minter = Service {
            grant: Grant { kinds: kinds(&[TransferKind::Journal, TransferKind::InitialFunds]), ..s.grant.clone() },
            ..s.clone()
        };
        assert_eq!(minter.may_send(&issuing, &none), Ok(()));
    }
}
