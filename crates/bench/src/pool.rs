//! Running many requests at once: a fixed number of tokio tasks draining one list of work,
//! as that many independent clients would, and the lock helper the shared state uses.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use tokio::task::JoinSet;

/// Runs `task(0..n)` on `concurrency` tokio tasks and returns the outputs in index order,
/// moving `bar` on by one for each. Separate tasks rather than one buffered stream, so that
/// building requests and parsing answers spreads over every core, as many independent clients
/// would.
pub async fn pool<T, F, Fut>(n: usize, concurrency: usize, bar: &ProgressBar, task: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let task = Arc::new(task);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (task, next, bar) = (Arc::clone(&task), Arc::clone(&next), bar.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break done;
                }
                done.push((i, task(i).await));
                bar.inc(1);
            }
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        out.extend(joined.context("a bench task panicked")?);
    }
    out.sort_unstable_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

/// Locks `mutex`, whether or not another holder panicked (the data is counts and outcomes,
/// valid at any point).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
