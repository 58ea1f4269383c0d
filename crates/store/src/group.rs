//! Group commit: calls made while one round trip is in flight share the next one.
//!
//! MongoDB's cost per write is mostly per command (parsing, the storage transaction, the wait
//! for the journal), not per document: one insert of four documents costs mongod about what
//! one insert of one does. A [`GroupCommit`] hands the waiting calls to one function as soon
//! as the previous group is done. Under light load groups are of one and no call waits; under
//! heavy load they grow and the per-command cost is shared.
//!
//! Between the two, groups stay small and the machine spends most of its CPU on per-group
//! costs: at half its maximum rate the whole pipeline used twice the CPU per transfer it used
//! at the maximum, saturating both cores, and the latency tail was queueing for them. So a
//! group may *linger*: while calls arrive faster than one per `linger` (a moving average of
//! the intervals), a group smaller than `max` waits for more until `linger` after its oldest
//! call. A lone call under light load is never held, and calls that already waited out a
//! previous group wait no longer.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::StoreError;

/// A call: its input, where its output goes, and when it was made.
type Job<I, O> = (I, oneshot::Sender<O>, Instant);

/// How calls are grouped: at most `max` to a group, which is held up to `linger` to fill
/// (zero: never held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    pub max: usize,
    pub linger: Duration,
}

impl Grouping {
    /// Groups of up to `max`, never held to fill.
    pub fn eager(max: usize) -> Self {
        Self { max, linger: Duration::ZERO }
    }
}

/// A moving average of the interval between calls, to tell whether holding a group is
/// likely to gain another call.
struct Arrivals {
    linger: Duration,
    last: Option<Instant>,
    /// Seconds; each new interval counts for an eighth.
    mean: f64,
    /// Longer intervals count as this long, so that an idle hour is forgotten after about
    /// ten quick calls.
    cap: f64,
}

impl Arrivals {
    fn new(linger: Duration) -> Self {
        let cap = linger.as_secs_f64() * 4.0;
        Self { linger, last: None, mean: cap, cap }
    }

    fn record(&mut self, at: Instant) {
        if let Some(last) = self.last.replace(at) {
            let interval = at.saturating_duration_since(last).as_secs_f64().min(self.cap);
            self.mean += (interval - self.mean) / 8.0;
        }
    }

    /// Whether holding a group is worth it: there is a linger, and another call is expected
    /// within it.
    fn brisk(&self) -> bool {
        !self.linger.is_zero() && self.mean < self.linger.as_secs_f64()
    }
}

/// A handle to a group-commit task; the task ends when the last handle is dropped.
pub struct GroupCommit<I, O> {
    jobs: mpsc::Sender<Job<I, O>>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Spawns the task (on the current Tokio runtime). `run` gets up to `grouping.max` inputs
    /// and returns one output per input, in order.
    pub fn spawn<F>(grouping: Grouping, mut run: F) -> Self
    where
        F: FnMut(Vec<I>) -> BoxFuture<'static, Vec<O>> + Send + 'static,
    {
        let Grouping { max, linger } = grouping;
        let max = max.max(1);
        let (jobs, mut rx) = mpsc::channel::<Job<I, O>>(max * 2);
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(max);
            let mut arrivals = Arrivals::new(linger);
            while rx.recv_many(&mut waiting, max).await > 0 {
                waiting.iter().for_each(|job| arrivals.record(job.2));
                if arrivals.brisk() {
                    let until = waiting[0].2 + linger;
                    while waiting.len() < max {
                        let seen = waiting.len();
                        match tokio::time::timeout_at(until, rx.recv_many(&mut waiting, max - seen)).await {
                            Ok(n) if n > 0 => waiting[seen..].iter().for_each(|job| arrivals.record(job.2)),
                            _ => break,
                        }
                    }
                }
                let (inputs, replies): (Vec<I>, Vec<_>) =
                    waiting.drain(..).map(|(input, reply, _)| (input, reply)).unzip();
                // A panic fails its own group (its callers get `None`), not every later one.
                let Ok(outputs) = AssertUnwindSafe(run(inputs)).catch_unwind().await else {
                    tracing::error!("a group commit panicked; its callers are told to retry");
                    continue;
                };
                for (reply, output) in replies.into_iter().zip(outputs) {
                    // The caller may be gone (its request was dropped); nothing to tell.
                    let _ = reply.send(output);
                }
            }
        });
        Self { jobs }
    }

    /// Runs `input` in the next group and returns its own output; `None` if its group
    /// panicked or returned too few outputs.
    pub async fn call(&self, input: I) -> Option<O> {
        let (reply, output) = oneshot::channel();
        self.jobs.send((input, reply, Instant::now())).await.ok()?;
        output.await.ok()
    }
}

impl<I: Send + 'static, T: Send + 'static> GroupCommit<I, Result<T, StoreError>> {
    /// [`Self::call`] for fallible work: a call whose group was lost (it panicked) fails with
    /// [`StoreError::Contention`], a transient error its caller retries.
    pub async fn try_call(&self, input: I) -> Result<T, StoreError> {
        self.call(input).await.unwrap_or(Err(StoreError::Contention { attempts: 0 }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_a_group_and_each_gets_its_own_output() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let group = GroupCommit::spawn(Grouping::eager(8), move |inputs: Vec<u32>| {
            seen.lock().unwrap().push(inputs.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                inputs.into_iter().map(|i| i * 10).collect()
            }
            .boxed()
        });
        let calls = (0..20).map(|i| {
            let group = group.clone();
            tokio::spawn(async move { group.call(i).await })
        });
        let outputs = futures::future::join_all(calls).await;
        for (i, output) in outputs.into_iter().enumerate() {
            assert_eq!(output.unwrap(), Some(i as u32 * 10));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|&n| n <= 8), "a group exceeded max: {sizes:?}");
        assert!(sizes.len() < 20, "calls waiting together were not grouped: {sizes:?}");
    }

    #[tokio::test]
    async fn a_panicking_group_fails_alone() {
        let group = GroupCommit::spawn(Grouping::eager(1), |inputs: Vec<u32>| {
            async move {
                assert!(inputs[0] != 13, "unlucky");
                inputs
            }
            .boxed()
        });
        assert_eq!(group.call(13).await, None);
        assert_eq!(group.call(14).await, Some(14));
    }

    #[tokio::test]
    async fn a_short_answer_leaves_the_unanswered_with_none() {
        let group = GroupCommit::spawn(Grouping::eager(4), |_inputs: Vec<u32>| async { Vec::<u32>::new() }.boxed());
        assert_eq!(group.call(1).await, None);
    }

    /// Calls `group` once every `interval`, `n` times; returns each call's wait for its output
    /// (virtual time) and the sizes of the groups run.
    async fn steady_calls(grouping: Grouping, interval: Duration, n: u32) -> (Vec<Duration>, Vec<usize>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let group = GroupCommit::spawn(grouping, move |inputs: Vec<u32>| {
            seen.lock().unwrap().push(inputs.len());
            async move { inputs }.boxed()
        });
        let mut calls = Vec::new();
        for i in 0..n {
            let group = group.clone();
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                assert_eq!(group.call(i).await, Some(i));
                started.elapsed()
            }));
            tokio::time::sleep(interval).await;
        }
        let waits = futures::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
        let sizes = sizes.lock().unwrap().clone();
        (waits, sizes)
    }

    #[tokio::test(start_paused = true)]
    async fn under_steady_calls_a_lingering_group_fills_and_no_call_waits_past_the_linger() {
        let linger = Duration::from_millis(10);
        let (waits, sizes) = steady_calls(Grouping { max: 64, linger }, Duration::from_millis(1), 300).await;
        assert!(waits.iter().all(|&w| w <= linger), "a call waited past the linger: {waits:?}");
        let mean = 300.0 / sizes.len() as f64;
        assert!(mean >= 5.0, "groups did not fill while calls kept coming: {sizes:?}");

        // The control: without a linger the same calls go one by one.
        let (waits, sizes) = steady_calls(Grouping::eager(64), Duration::from_millis(1), 300).await;
        assert!(waits.iter().all(Duration::is_zero));
        assert_eq!(sizes.len(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn sparse_calls_are_never_held() {
        let linger = Duration::from_millis(10);
        let (waits, sizes) = steady_calls(Grouping { max: 64, linger }, Duration::from_millis(25), 40).await;
        assert!(waits.iter().all(Duration::is_zero), "a sparse call was held: {waits:?}");
        assert_eq!(sizes.len(), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_group_goes_at_once() {
        let linger = Duration::from_secs(1);
        let group = GroupCommit::spawn(Grouping { max: 4, linger }, |inputs: Vec<u32>| async move { inputs }.boxed());
        // Quick calls first, so that the group would linger if it were not full.
        for i in 0..20 {
            group.call(i).await;
        }
        let started = Instant::now();
        let calls = (0..4).map(|i| group.call(i));
        assert_eq!(futures::future::join_all(calls).await, vec![Some(0), Some(1), Some(2), Some(3)]);
        assert!(started.elapsed() < linger, "a full group waited {:?}", started.elapsed());
    }
}
