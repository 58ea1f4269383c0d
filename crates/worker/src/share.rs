//! Which partitions a worker keeps. Every worker subscribes to every partition queue, and the
//! broker makes one of them the single active consumer of each (the first to subscribe, on
//! RabbitMQ 3.10). A worker learns that it is active on a partition when it gets a delivery
//! from it. When it is active on more than its fair share (partitions ÷ workers, rounded up),
//! it hands the extra partitions on: it cancels and re-subscribes, which moves it to the back of
//! that queue's consumers, so the next worker in line becomes active. Each worker keeps its
//! lowest-numbered partitions, so the hand-offs settle. If a worker goes away, the broker
//! makes the next consumer active at once: no partition waits for a lease to expire.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A partition handed on is not handed on again within this time: the consumer count the
/// share is computed from may be stale, and a worker that got a partition straight back (being
/// its only consumer) must not cancel and re-subscribe on every delivery.
const HAND_OFF_COOLDOWN: Duration = Duration::from_secs(5);

/// A worker's view of the partitions it is active on. `generation` counts the subscriptions of
/// one partition queue on this connection: deliveries from a subscription already cancelled
/// (prefetched before the hand-off) do not make the worker active again.
#[derive(Debug)]
pub(crate) struct Share {
    partitions: u16,
    workers: u32,
    /// Partition → the subscription generation it is active in.
    active: BTreeMap<u16, u32>,
    /// Partition → generation handed on, and when.
    handed_on: HashMap<u16, (u32, Instant)>,
}

impl Share {
    pub(crate) fn new(partitions: u16) -> Self {
        Self { partitions, workers: 1, active: BTreeMap::new(), handed_on: HashMap::new() }
    }

    /// Workers sharing the partitions, as the broker counts consumers.
    pub(crate) fn set_workers(&mut self, workers: u32) {
        self.workers = workers.max(1);
    }

    /// How many partitions this worker should keep.
    pub(crate) fn quota(&self) -> usize {
        usize::from(self.partitions).div_ceil(self.workers as usize)
    }

    /// Partitions this worker is active on, in order.
    pub(crate) fn active(&self) -> impl Iterator<Item = u16> + '_ {
        self.active.keys().copied()
    }

    /// Records a delivery from `partition`'s subscription `generation`. Returns true when the
    /// worker should hand that partition on now.
    pub(crate) fn delivered(&mut self, partition: u16, generation: u32, now: Instant) -> bool {
        if let Some(&(handed, at)) = self.handed_on.get(&partition) {
            if generation <= handed {
                return false;
            }
            if now.duration_since(at) < HAND_OFF_COOLDOWN {
                self.active.insert(partition, generation);
                return false;
            }
        }
        self.active.insert(partition, generation);
        let quota = self.quota();
        if self.active.len() <= quota || self.active.keys().take(quota).any(|&p| p == partition) {
            return false;
        }
        self.active.remove(&partition);
        self.handed_on.insert(partition, (generation, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deliveries from every partition in turn, as `worker` sees them; returns what it hands on.
    fn deliver_all(share: &mut Share, generation: u32, now: Instant) -> Vec<u16> {
        (0..share.partitions).filter(|&p| share.delivered(p, generation, now)).collect()
    }

    #[test]
    fn a_lone_worker_keeps_every_partition() {
        let mut share = Share::new(8);
        assert!(deliver_all(&mut share, 0, Instant::now()).is_empty());
        assert_eq!(share.active().count(), 8);
    }

    #[test]
    fn with_two_workers_the_upper_half_is_handed_on_once() {
        let now = Instant::now();
        let mut share = Share::new(8);
        share.set_workers(2);
        assert_eq!(deliver_all(&mut share, 0, now), vec![4, 5, 6, 7]);
        assert_eq!(share.active().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        // Deliveries prefetched before the hand-off do not count.
        assert!(deliver_all(&mut share, 0, now).is_empty());
        assert_eq!(share.active().count(), 4);
    }

    #[test]
    fn three_workers_settle_on_three_three_two() {
        let now = Instant::now();
        let mut workers: Vec<Share> = (0..3).map(|_| Share::new(8)).collect();
        for w in &mut workers {
            w.set_workers(3);
        }
        // Worker 0 subscribed first and gets everything; what it hands on goes to worker 1,
        // and what worker 1 cannot keep goes to worker 2.
        let passed = deliver_all(&mut workers[0], 0, now);
        let passed: Vec<u16> = passed.into_iter().filter(|&p| workers[1].delivered(p, 0, now)).collect();
        assert!(passed.iter().all(|&p| !workers[2].delivered(p, 0, now)));
        let counts: Vec<usize> = workers.iter().map(|w| w.active().count()).collect();
        assert_eq!(counts, vec![3, 3, 2]);
    }

    #[test]
    fn a_partition_back_at_once_is_kept_until_the_cooldown_ends() {
        let now = Instant::now();
        let mut share = Share::new(2);
        share.set_workers(2);
        assert!(!share.delivered(0, 0, now));
        assert!(share.delivered(1, 0, now));
        // The other worker is gone (the count is stale): partition 1 comes straight back.
        assert!(!share.delivered(1, 1, now + Duration::from_millis(10)));
        assert_eq!(share.active().count(), 2);
        assert!(share.delivered(1, 1, now + HAND_OFF_COOLDOWN));
        // Once the count catches up, it stays.
        share.set_workers(1);
        assert!(!share.delivered(1, 2, now + HAND_OFF_COOLDOWN * 3));
        assert_eq!(share.active().count(), 2);
    }
}
