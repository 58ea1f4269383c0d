//! Long-poll support: wakes `GET /transactions/{id}?wait=N` requests when a worker reports
//! the transaction's outcome on the result exchange, instead of clients polling in a loop.
//!
//! Each gateway consumes an exclusive, auto-deleted queue of its own, bound to the
//! `ledgerflow.results.by-transaction` direct exchange (fed by the `ledgerflow.results`
//! fanout) under the ids its waiters wait on and no others: a gateway receives the results its
//! own long polls need, however many gateways run, and takes none from the consumers of the
//! durable `ledgerflow.results` queue. The first waiter on an id has it bound, confirmed by the
//! broker before the waiter reads MongoDB, so no result slips between the read and the wait;
//! once the last one leaves it is unbound. One task (the watcher's) does every bind and
//! unbind, one round after another, so that a late unbind never removes the binding of a
//! newer waiter. A result only wakes waiters; the answer is always re-read from MongoDB, which
//! stays the source of truth, and waiters re-read it every few seconds anyway, which covers a
//! broker outage.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use ledgerflow_domain::TransactionId;
use ledgerflow_messaging::{ChosenResults, MessagingError, Topology, close, connect};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Longest wait for the bindings of one round: a broker that takes longer is treated as lost
/// (the link is dropped and made again), and its waiters go on without a binding.
const ROUND_LIMIT: Duration = Duration::from_secs(5);
/// Most ids bound or unbound in one round (the rest wait for the next): a burst of waiters,
/// or every live id after a reconnection, goes to the broker in slices, each one pipelined on
/// the watcher's channel.
const ROUND_MAX: usize = 256;
/// Longest a waiter waits for its binding before it reads MongoDB anyway (then it relies on
/// re-reading every few seconds).
const BIND_LIMIT: Duration = Duration::from_secs(2);

/// Waiters by transaction id, and which ids the watcher's queue must be bound to.
#[derive(Default)]
pub struct Watchers {
    state: Mutex<State>,
    /// Wakes the watcher task when `dirty` has ids.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// An entry lives while someone waits on its id.
    waiting: HashMap<TransactionId, Waiting>,
    /// Ids whose binding may not match their waiters any more, for the watcher's next round.
    dirty: HashSet<TransactionId>,
    /// Whether the watcher has a queue to bind: without one, waiters do not wait for a binding.
    linked: bool,
}

struct Waiting {
    /// Notified when the transaction's result arrives.
    result: Arc<Notify>,
    waiters: usize,
    /// Whether the broker has confirmed the binding of this id (set by the watcher only).
    bound: bool,
    /// Notified when `bound` is set, or when the watcher gives up binding (link lost).
    binding: Arc<Notify>,
}

/// Holds a place in [`Watchers`] until dropped.
pub struct Watch<'a> {
    watchers: &'a Watchers,
    id: TransactionId,
    pub notify: Arc<Notify>,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers interest in `id` and returns once the gateway's queue is bound to it (or the
    /// broker is not linked, or at `deadline`, or after [`BIND_LIMIT`]): a result published
    /// from then on wakes the watch. Create the `notified()` future and `enable()` it before
    /// checking the database, so a result arriving in between is not missed.
    pub async fn watch(&self, id: TransactionId, deadline: Instant) -> Watch<'_> {
        let (watch, binding) = {
            let mut state = self.lock();
            let linked = state.linked;
            let entry = state.waiting.entry(id).or_insert_with(|| Waiting {
                result: Arc::new(Notify::new()),
                waiters: 0,
                bound: false,
                binding: Arc::new(Notify::new()),
            });
            entry.waiters += 1;
            let watch = Watch { watchers: self, id, notify: Arc::clone(&entry.result) };
            let binding = (linked && !entry.bound).then(|| Arc::clone(&entry.binding));
            if binding.is_some() {
                state.dirty.insert(id);
            }
            (watch, binding)
        };
        // The guard exists before any await: a request dropped while waiting still leaves.
        if let Some(binding) = binding {
            self.changed.notify_one();
            let bound = binding.notified();
            tokio::pin!(bound);
            bound.as_mut().enable();
            if self.awaits_binding(id) {
                let by = deadline.min(Instant::now() + BIND_LIMIT);
                let _ = tokio::time::timeout_at(by, bound).await;
            }
        }
        watch
    }

    /// Whether a waiter on `id` still has its binding to wait for.
    fn awaits_binding(&self, id: TransactionId) -> bool {
        let state = self.lock();
        state.linked && state.waiting.get(&id).is_some_and(|w| !w.bound)
    }

    fn wake(&self, id: TransactionId) {
        if let Some(waiting) = self.lock().waiting.get(&id) {
            waiting.result.notify_waiters();
        }
    }

    /// A new queue, bound to nothing yet: every id waited on is to be bound.
    fn link(&self) {
        let mut state = self.lock();
        state.linked = true;
        let live: Vec<TransactionId> = state.waiting.keys().copied().collect();
        state.dirty.extend(live);
    }

    fn has_changes(&self) -> bool {
        !self.lock().dirty.is_empty()
    }

    /// The queue is gone, and its bindings with it: waiters stop waiting for theirs.
    fn unlink(&self) {
        let mut state = self.lock();
        state.linked = false;
        state.dirty.clear();
        for waiting in state.waiting.values_mut() {
            waiting.bound = false;
            waiting.binding.notify_waiters();
        }
        metrics::gauge!("ledgerflow_gateway_result_bindings").set(0.0);
    }

    /// Wakes every waiter, to re-read what a result it missed (the link was down) would have
    /// told it.
    fn wake_all(&self) {
        for waiting in self.lock().waiting.values() {
            waiting.result.notify_waiters();
        }
    }

    /// Brings the queue's bindings in line with the waiters, for up to [`ROUND_MAX`] ids that
    /// may have changed, then tells their waiters; `bound` is what the broker has. Fails when
    /// the link does, after which the watcher makes a new one.
    async fn rebind(&self, chosen: &ChosenResults, bound: &mut HashSet<TransactionId>) -> Result<(), MessagingError> {
        let plan = self.plan(bound);
        let binds = plan.bind.iter().map(|id| chosen.bind(*id));
        let unbinds = plan.unbind.iter().map(|id| chosen.unbind(*id));
        let both = futures::future::join(futures::future::join_all(binds), futures::future::join_all(unbinds));
        let (bound_now, unbound_now) = tokio::time::timeout(ROUND_LIMIT, both)
            .await
            .map_err(|_| MessagingError::Unavailable(format!("no answer to bindings within {ROUND_LIMIT:?}")))?;
        for (id, answer) in plan.unbind.iter().zip(unbound_now) {
            answer?;
            bound.remove(id);
        }
        let mut confirmed = Vec::with_capacity(plan.bind.len());
        for (id, answer) in plan.bind.iter().zip(bound_now) {
            answer?;
            bound.insert(*id);
            confirmed.push(*id);
        }
        confirmed.extend(plan.already);
        self.confirm(&confirmed);
        metrics::gauge!("ledgerflow_gateway_result_bindings").set(bound.len() as f64);
        Ok(())
    }

    /// Tells the waiters on `ids` that their binding is in place.
    fn confirm(&self, ids: &[TransactionId]) {
        let mut state = self.lock();
        for id in ids {
            // A waiter that came after its id's last waiter left has an entry of its own,
            // bound as well: the binding is the broker's, whoever asked for it.
            if let Some(waiting) = state.waiting.get_mut(id) {
                waiting.bound = true;
                waiting.binding.notify_waiters();
            }
        }
    }

    /// Takes up to [`ROUND_MAX`] changed ids and says what each needs, given the bindings the
    /// broker has; leaves the watcher woken if more are left.
    fn plan(&self, bound: &HashSet<TransactionId>) -> Plan {
        let mut state = self.lock();
        let ids: Vec<TransactionId> = state.dirty.iter().take(ROUND_MAX).copied().collect();
        let mut plan = Plan::default();
        for id in ids {
            state.dirty.remove(&id);
            let wanted = state.waiting.contains_key(&id);
            match (wanted, bound.contains(&id)) {
                (true, false) => plan.bind.push(id),
                (true, true) => plan.already.push(id),
                (false, true) => plan.unbind.push(id),
                (false, false) => {}
            }
        }
        if !state.dirty.is_empty() {
            self.changed.notify_one();
        }
        plan
    }
}

/// One round of [`Watchers::rebind`].
#[derive(Default)]
struct Plan {
    bind: Vec<TransactionId>,
    unbind: Vec<TransactionId>,
    /// Waited on and bound already: only their waiters are to be told.
    already: Vec<TransactionId>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut state = self.watchers.lock();
        let Some(entry) = state.waiting.get_mut(&self.id) else { return };
        entry.waiters -= 1;
        if entry.waiters == 0 {
            state.waiting.remove(&self.id);
            // Its binding goes in the watcher's next round (none to undo without a link).
            if state.linked {
                state.dirty.insert(self.id);
                self.watchers.changed.notify_one();
            }
        }
    }
}

/// Consumes results until `shutdown`, reconnecting after broker failures.
pub(crate) async fn run(uri: String, topology: Topology, watchers: Arc<Watchers>, shutdown: CancellationToken) {
    // Exported from zero: a gateway that never waited still shows it received nothing.
    metrics::counter!("ledgerflow_gateway_results_received_total").increment(0);
    metrics::gauge!("ledgerflow_gateway_result_bindings").set(0.0);
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let outcome = consume(&uri, &topology, &watchers, &shutdown).await;
        watchers.unlink();
        if let Err(e) = outcome {
            warn!(error = %e, retry_in = ?backoff, "result watcher lost the broker");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

async fn consume(
    uri: &str,
    topology: &Topology,
    watchers: &Watchers,
    shutdown: &CancellationToken,
) -> Result<(), MessagingError> {
    // Named after the prefix (`ledgerflow-gateway-results` by default): the deployment's own
    // on a shared broker, and a test's own on the test broker.
    let connection = connect(uri, &format!("{}-gateway-results", topology.prefix())).await?;
    let channel = connection.create_channel().await?;
    let (chosen, mut consumer) = topology.follow_chosen_results(&channel, "ledgerflow-gateway-results").await?;
    let mut bound = HashSet::new();
    watchers.link();
    // Every id already waited on is bound before its waiters re-read what they may have
    // missed while there was no queue.
    while watchers.has_changes() {
        watchers.rebind(&chosen, &mut bound).await?;
    }
    watchers.wake_all();
    info!("result watcher consuming");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                close(&connection, "gateway stopping").await;
                return Ok(());
            }
            () = watchers.changed.notified() => watchers.rebind(&chosen, &mut bound).await?,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    metrics::counter!("ledgerflow_gateway_results_received_total").increment(1);
                    let id = serde_json::from_slice::<serde_json::Value>(&delivery.data)
                        .ok()
                        .and_then(|v| v.get("transactionId")?.as_str()?.parse().ok());
                    if let Some(id) = id {
                        watchers.wake(id);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(MessagingError::Unavailable("result consumer cancelled".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch that does not wait for its binding (its deadline has passed).
    async fn watch(watchers: &Watchers, id: TransactionId) -> Watch<'_> {
        watchers.watch(id, Instant::now()).await
    }

    #[tokio::test]
    async fn the_first_waiter_on_an_id_binds_it_and_the_last_one_to_leave_unbinds_it() {
        let watchers = Watchers::default();
        watchers.link();
        let (id, mut bound) = (TransactionId::generate(), HashSet::new());
        let first = watch(&watchers, id).await;
        let plan = watchers.plan(&bound);
        assert_eq!((plan.bind.as_slice(), plan.unbind.len()), ([id].as_slice(), 0));
        bound.insert(id);
        watchers.confirm(&plan.bind);
        // A second waiter finds it bound: nothing to ask the broker, nothing to wait for.
        let second = watch(&watchers, id).await;
        assert!(!watchers.awaits_binding(id));
        assert!(!watchers.has_changes());
        drop(first);
        assert!(!watchers.has_changes(), "a waiter is left");
        drop(second);
        let plan = watchers.plan(&bound);
        assert_eq!((plan.bind.len(), plan.unbind.as_slice()), (0, [id].as_slice()));
    }

    #[tokio::test]
    async fn an_unbind_never_removes_the_binding_of_a_newer_waiter() {
        let watchers = Watchers::default();
        watchers.link();
        let id = TransactionId::generate();
        let mut bound = HashSet::from([id, TransactionId::generate()]);
        // The last waiter leaves and a new one comes before the round: the binding stays.
        drop(watch(&watchers, id).await);
        let newer = watch(&watchers, id).await;
        let plan = watchers.plan(&bound);
        assert_eq!((plan.bind.len(), plan.unbind.len(), plan.already.as_slice()), (0, 0, [id].as_slice()));
        watchers.confirm(&plan.already);
        assert!(!watchers.awaits_binding(id));
        // The last waiter leaves, its unbind is under way when another one comes: that one
        // is bound again in the next round, after the unbind.
        drop(newer);
        let unbinding = watchers.plan(&bound);
        assert_eq!(unbinding.unbind, [id]);
        let latest = watch(&watchers, id).await;
        assert!(watchers.awaits_binding(id));
        bound.remove(&id);
        let plan = watchers.plan(&bound);
        assert_eq!(plan.bind, [id]);
        drop(latest);
    }

    #[tokio::test]
    async fn without_a_link_a_waiter_does_not_wait_for_a_binding() {
        let watchers = Watchers::default();
        let id = TransactionId::generate();
        let far = Instant::now() + Duration::from_secs(60);
        let started = Instant::now();
        let waiting = watchers.watch(id, far).await;
        assert!(started.elapsed() < BIND_LIMIT);
        assert!(!watchers.has_changes());
        // A link made later binds every id waited on.
        watchers.link();
        assert_eq!(watchers.plan(&HashSet::new()).bind, [id]);
        // And losing it releases whoever waits for a binding.
        watchers.unlink();
        assert!(!watchers.awaits_binding(id));
        drop(waiting);
    }
}
