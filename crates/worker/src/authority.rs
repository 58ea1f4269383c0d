//! Who may publish what. A command for a recorded transaction (one with a `transactionId`)
//! must come from LedgerFlow's own processes, whose broker users the deployment names; any
//! other command must come from a registered, enabled service, in its own name and within its
//! grant (`ledgerflow_domain::grants`). The broker vouches for the publisher (`user_id`).
//!
//! Services are read from the store every [`REFRESH`], so `ledgerflow admin services` changes
//! reach every worker within about a second, with no restart; commands already queued are
//! judged by the grant of the moment they are processed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ledgerflow_domain::grants::{Service, Unauthorized};
use ledgerflow_domain::{Initiator, TransactionId, TransferRequest};
use ledgerflow_messaging::{Origin, TrustedUsers};
use ledgerflow_store::{Store, StoreError};
use tracing::{debug, warn};

/// How often the services are read again.
const REFRESH: Duration = Duration::from_secs(1);
/// A list of services older than this is not trusted to judge by (the store has been
/// unreachable): commands needing it wait in the retry queue instead.
const STALE: Duration = Duration::from_secs(10);

/// Why a command cannot be judged now.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Undecided {
    #[error("the registered services could not be read for {0:?}")]
    StaleServices(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A refusal, and the service that published the command when it is known (its results name
/// that service, never an initiator the message merely claimed).
#[derive(Debug)]
pub(crate) struct Refused {
    pub why: Unauthorized,
    pub service: Option<Service>,
}

impl Refused {
    fn anonymous(why: Unauthorized) -> Self {
        Self { why, service: None }
    }

    /// The initiator the FAILED result may name.
    pub fn initiator(&self) -> Option<Initiator> {
        self.service.as_ref().map(|s| Initiator::Service(s.name.clone()))
    }
}

struct Registry {
    by_user: HashMap<String, Service>,
    /// Services' broker users that are also LedgerFlow's own (a deployment with one user).
    shared: BTreeSet<String>,
    read_at: Instant,
}

pub(crate) struct Authority {
    trusted: TrustedUsers,
    store: Store,
    registry: RwLock<Option<Registry>>,
}

impl Authority {
    pub fn new(trusted: TrustedUsers, store: Store) -> Self {
        Self { trusted, store, registry: RwLock::new(None) }
    }

    pub fn trusted(&self) -> &TrustedUsers {
        &self.trusted
    }

    /// Reads the services every [`REFRESH`], forever.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh().await {
                debug!(error = %e, "could not read the registered services; keeping the last list");
            }
        }
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        let services = self.store.list_services().await?;
        let by_user: HashMap<String, Service> =
            services.into_iter().map(|r| (r.service.broker_user.as_str().to_owned(), r.service)).collect();
        let shared: BTreeSet<String> = by_user.keys().filter(|u| self.trusted.contains(u)).cloned().collect();
        let mut registry = self.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Said once per change, not every second.
        if registry.as_ref().is_none_or(|r| r.shared != shared) {
            for user in &shared {
                warn!(broker_user = %user, "a service publishes as one of LedgerFlow's own broker users: give it its own");
            }
        }
        *registry = Some(Registry { by_user, shared, read_at: Instant::now() });
        Ok(())
    }

    fn service_of(&self, publisher: &str) -> Result<Option<Service>, Undecided> {
        let registry = self.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match registry.as_ref() {
            Some(r) if r.read_at.elapsed() <= STALE => Ok(r.by_user.get(publisher).cloned()),
            Some(r) => Err(Undecided::StaleServices(r.read_at.elapsed())),
            None => Err(Undecided::StaleServices(Duration::ZERO)),
        }
    }

    /// Who may act here: `Ok(None)` for LedgerFlow's own command for a recorded transaction
    /// (the worker then checks it against that record, as for every such command), or the
    /// registered service that publishes, in its own name, a command of its own.
    pub fn identify(
        &self,
        origin: &Origin,
        recorded: Option<TransactionId>,
        initiator: &Initiator,
    ) -> Result<Result<Option<Service>, Refused>, Undecided> {
        if recorded.is_some() {
            if origin.own {
                return Ok(Ok(None));
            }
            let publisher = origin.publisher.clone().unwrap_or_else(|| "(none)".to_owned());
            return Ok(Err(Refused::anonymous(Unauthorized::RecordedTransaction(publisher))));
        }
        let Some(publisher) = origin.publisher.as_deref() else {
            return Ok(Err(Refused::anonymous(Unauthorized::Anonymous)));
        };
        let Some(service) = self.service_of(publisher)? else {
            return Ok(Err(Refused::anonymous(Unauthorized::UnknownPublisher(publisher.to_owned()))));
        };
        Ok(match service.may_act_as(initiator) {
            Ok(()) => Ok(Some(service)),
            Err(why) => Err(Refused { why, service: Some(service) }),
        })
    }

    /// Whether `service` (as [`Authority::identify`] found it) may send `request`; the
    /// debited accounts' owners are looked up only when the grant covers accounts by owner.
    pub async fn permit(&self, service: &Service, request: &TransferRequest) -> Result<Result<(), Refused>, Undecided> {
        let mut owners = BTreeMap::new();
        for account in service.owners_needed(request) {
            if let Some(owner) = self.store.find_account(account).await?.and_then(|a| a.owner_id) {
                owners.insert(account, owner);
            }
        }
        let refused = |why| Refused { why, service: Some(service.clone()) };
        Ok(service.may_send(request, &owners).map_err(refused))
    }
}
