//! Group commit: calls made while one round trip is in flight share the next one.
//!
//! MongoDB's cost per write is mostly per command (parsing, the storage transaction, the wait
//! for the journal), not per document: one insert of four documents costs mongod about what
//! one insert of one does. A [`GroupCommit`] hands every waiting call to one function the
//! moment the previous group is done, so it never delays a call to fill a group: under light
//! load groups are of one, under heavy load they grow and the per-command cost is shared.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

type Job<I, O> = (I, oneshot::Sender<O>);

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
    /// Spawns the task (on the current Tokio runtime). `run` gets up to `max` inputs and
    /// returns one output per input, in order.
    pub fn spawn<F>(max: usize, mut run: F) -> Self
    where
        F: FnMut(Vec<I>) -> BoxFuture<'static, Vec<O>> + Send + 'static,
    {
        let max = max.max(1);
        let (jobs, mut rx) = mpsc::channel::<Job<I, O>>(max * 2);
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(max);
            while rx.recv_many(&mut waiting, max).await > 0 {
                let (inputs, replies): (Vec<I>, Vec<_>) = waiting.drain(..).unzip();
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
        self.jobs.send((input, reply)).await.ok()?;
        output.await.ok()
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
        let group = GroupCommit::spawn(8, move |inputs: Vec<u32>| {
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
        let group = GroupCommit::spawn(1, |inputs: Vec<u32>| {
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
        let group = GroupCommit::spawn(4, |_inputs: Vec<u32>| async { Vec::<u32>::new() }.boxed());
        assert_eq!(group.call(1).await, None);
    }
}
