//! Work that must finish whatever the request does.
//!
//! An operation that changes messages makes two kinds of writes: the message writes and, after them, the
//! counter writes that account for them (see `tally.rs`). Two things could stop it between the two:
//!
//! - The request is dropped midway (a client that hangs up on the local server, a caller's timeout).
//!   [`detached`] runs the operation as a task of its own, so it finishes anyway.
//! - Storage never answers a message write, so its outcome is unknown. [`Store::settle_later`] re-drives
//!   that write in the background, idempotently (its tag or condition recognises an earlier attempt that
//!   was applied), and writes the counts of whatever it finds.
//!
//! Only a process that dies can still stop an operation between its writes.

use super::{Store, StoreError};
use std::sync::atomic::Ordering;

/// Runs an operation that changes messages as a task of its own, so that it finishes even when the
/// request that started it is dropped midway (a client that hangs up on the local server, a caller's
/// timeout): its tags and its counter changes are written whatever the caller does. Only a process that
/// dies can still stop it between the two.
pub(crate) async fn detached<T, F>(what: &'static str, operation: F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(operation).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down.
        Err(_) => Err(StoreError::exhausted(what)),
    }
}

/// How long [`Store::settle_later`] keeps trying.
const SETTLE_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Settlements one process runs at once at most (bounds the tasks and memory an outage can pile up).
const MAX_SETTLING: usize = 1024;

/// Settlements running now.
static SETTLING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Store {
    /// Re-drives, in the background, a message write whose outcome is unknown (storage never answered
    /// it): `attempt` repeats it idempotently (its tag or condition recognises an earlier attempt that
    /// was applied) and writes the counts of whatever it finds it did. Tried after 100 ms, 200 ms, ...
    /// (at most 2 s apart) until it answers, for at most [`SETTLE_FOR`]; then the failure is logged. At most
    /// [`MAX_SETTLING`] run at once; beyond that the write is logged and left unsettled.
    pub(crate) fn settle_later<F, Fut>(&self, what: &'static str, attempt: F)
    where
        F: Fn(Store) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), StoreError>> + Send,
    {
        if SETTLING.fetch_add(1, Ordering::AcqRel) >= MAX_SETTLING {
            SETTLING.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(what, "too many writes with an unknown outcome; this one is not settled");
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut pause = std::time::Duration::from_millis(100);
            loop {
                tokio::time::sleep(pause).await;
                match attempt(store.clone()).await {
                    Ok(()) => break,
                    Err(e) if started.elapsed() > SETTLE_FOR => {
                        tracing::error!(error = %e, what, "a write with an unknown outcome could not be settled");
                        break;
                    }
                    Err(_) => pause = (pause * 2).min(std::time::Duration::from_secs(2)),
                }
            }
            SETTLING.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
