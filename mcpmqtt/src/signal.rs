//! A flag raised once, that tasks can wait on: a call's cancel, the end of
//! a connection. Made for the hot path: reading it is one atomic load, and
//! raising it never takes a lock that a reader would (a
//! `CancellationToken` locks its tree node on every check, clone and drop,
//! and allocates a node of its own).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Raised once, for good.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    notify: Notify,
}

impl Signal {
    /// Raises the flag and wakes every task waiting in [`Signal::raised`].
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the flag is raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised (at once if it is).
    pub(crate) async fn raised(&self) {
        loop {
            // Registered before the flag is read: a `raise` between the two
            // still wakes it.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_raise_wakes_a_waiting_task_and_later_waits_return_at_once() {
        let signal = Arc::new(Signal::default());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.raised().await }
        });
        tokio::task::yield_now().await;
        assert!(!signal.is_raised());
        signal.raise();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting task heard the raise")
            .unwrap();
        assert!(signal.is_raised());
        tokio::time::timeout(Duration::from_secs(10), signal.raised())
            .await
            .expect("raised already: no wait");
    }
}
