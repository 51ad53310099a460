//! Which calls a cancel can reach: the calls running, each with its caller
//! and the way to cancel it, and the cancels of calls not running (yet).
//! A data structure only: no I/O, and no clock of its own (callers pass the
//! time). One lock guards both, so a call's start and a cancel cannot pass
//! each other.

use std::time::{Duration, Instant};

use super::dedupe::{CallKey, CallMap};
use crate::tool::context::CallerCancel;

/// How long a cancel of a call that is not running is remembered.
const EARLY_KEPT: Duration = Duration::from_secs(60);
/// The most such cancels remembered: a caller cannot fill the server's
/// memory with cancels of calls it never made.
const EARLY_MAX: usize = 10_000;

/// The calls a cancel can reach.
#[derive(Default)]
pub(crate) struct Cancels {
    /// The calls running, with the caller that made each: only it may
    /// cancel it.
    running: CallMap<CallerCancel>,
    /// Cancels of calls not running (yet): a call still in line is answered
    /// `cancelled` when its turn comes.
    early: CallMap<Instant>,
}

/// What became of a cancel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// The running call was cancelled.
    Running,
    /// The call runs, but for another caller: nothing was done.
    NotTheCaller,
    /// No such call runs: the cancel is remembered, if there is room.
    Early,
}

impl Cancels {
    /// A call starts, unless it was cancelled before it started (`false`).
    pub(crate) fn start(&mut self, key: &CallKey, call: CallerCancel) -> bool {
        if self.early.remove(key).is_some() {
            return false;
        }
        self.running.insert(*key, call);
        true
    }

    /// A call ended, however.
    pub(crate) fn end(&mut self, key: &CallKey) {
        self.running.remove(key);
    }

    /// `caller` cancels the call `key`.
    pub(crate) fn cancel(&mut self, key: CallKey, caller: &str, now: Instant) -> Cancelled {
        if let Some(call) = self.running.get(&key) {
            if call.caller() != caller {
                return Cancelled::NotTheCaller;
            }
            call.cancel();
            return Cancelled::Running;
        }
        self.early.retain(|_, at| now.duration_since(*at) < EARLY_KEPT);
        if self.early.len() < EARLY_MAX {
            self.early.insert(key, now);
        }
        Cancelled::Early
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::context::CallContext;

    /// A running call's context, made by "scout".
    fn call() -> CallContext {
        CallContext::for_test("echo", "scout").0
    }

    fn key(call_id: &str) -> CallKey {
        CallKey::new("echo", call_id, "lab/mcp/clients/scout/responses")
    }

    #[test]
    fn only_the_caller_cancels_a_running_call() {
        let mut cancels = Cancels::default();
        let ctx = call();
        assert!(cancels.start(&key("c1"), ctx.caller_cancel()));
        let now = Instant::now();
        assert_eq!(cancels.cancel(key("c1"), "mallory", now), Cancelled::NotTheCaller);
        assert!(!ctx.is_cancelled());
        assert_eq!(cancels.cancel(key("c1"), "scout", now), Cancelled::Running);
        assert!(ctx.cancelled_by_caller());
        cancels.end(&key("c1"));
        // Ended: a cancel now only waits for a call that will not come.
        assert_eq!(cancels.cancel(key("c1"), "scout", now), Cancelled::Early);
    }

    #[test]
    fn a_call_cancelled_before_it_starts_does_not_start() {
        let mut cancels = Cancels::default();
        let now = Instant::now();
        assert_eq!(cancels.cancel(key("c2"), "scout", now), Cancelled::Early);
        assert!(!cancels.start(&key("c2"), call().caller_cancel()));
        assert!(
            cancels.start(&key("c2"), call().caller_cancel()),
            "the early cancel is used up"
        );
    }

    #[test]
    fn early_cancels_are_bounded_in_number_and_age() {
        let mut cancels = Cancels::default();
        let now = Instant::now();
        for i in 0..EARLY_MAX + 5 {
            cancels.cancel(key(&format!("c{i}")), "scout", now);
        }
        assert_eq!(cancels.early.len(), EARLY_MAX);
        cancels.cancel(key("late"), "scout", now + EARLY_KEPT);
        assert_eq!(cancels.early.len(), 1, "the old ones expired");
    }
}
