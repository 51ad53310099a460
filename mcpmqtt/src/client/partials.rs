//! A streamed call's partials, handed over in `seq` order. One broker keeps
//! the order of a connection's QoS 1 publishes; a cluster does not between
//! its nodes, so partials can arrive out of order, and after the response.
//! Servers that speak the extensions number their partials from 0 and end
//! with one `done` (SPEC §5): the client holds a partial that comes early
//! until the ones before it arrive, and waits a little after the response
//! for the ones still missing. A v0.1 server's `seq` is a clock: its
//! partials are handed over as they arrive.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::protocol::envelope::Partial;

/// One message of a call's stream, by its `seq`, as the router hands it on.
#[derive(Debug)]
pub(super) enum StreamEvent {
    /// A partial; `None` for one with nothing a caller can use (neither
    /// `content` nor `data`), which still takes its place in the order.
    Partial(u64, Option<Partial>),
    /// The `done` that ends the stream.
    Done(u64),
}

/// How long a call whose response has come waits for its partials still
/// missing (never past its own deadline): long enough for a cluster's
/// nodes to forward what they hold, short enough not to hold up a result
/// whose stream lost a partial for good (its session lost with a node).
pub(super) const PARTIALS_GRACE: Duration = Duration::from_secs(1);

/// Puts one call's stream back in order.
#[derive(Debug)]
pub(super) struct InOrder {
    /// Whether `seq` counts from 0 (a server that speaks the extensions);
    /// when not, partials pass in arrival order.
    numbered: bool,
    /// The `seq` handed over next.
    next: u64,
    /// Partials that came before their turn.
    early: BTreeMap<u64, Option<Partial>>,
    /// The `seq` of the `done`, once it has come: the stream's length.
    done: Option<u64>,
}

impl InOrder {
    /// `numbered`: whether the server numbers its partials from 0.
    pub(super) fn new(numbered: bool) -> Self {
        InOrder {
            numbered,
            next: 0,
            early: BTreeMap::new(),
            done: None,
        }
    }

    /// Takes one stream message; `hand` gets each partial whose turn has
    /// come, in order. A partial seen before (a call run again after a
    /// fail-over starts again at 0) is dropped.
    pub(super) fn take(&mut self, event: StreamEvent, mut hand: impl FnMut(Partial)) {
        let (seq, partial) = match event {
            StreamEvent::Done(seq) => return self.ends_at(seq),
            StreamEvent::Partial(seq, partial) => (seq, partial),
        };
        if !self.numbered {
            partial.into_iter().for_each(hand);
            return;
        }
        if seq == self.next {
            partial.into_iter().for_each(&mut hand);
            self.next += 1;
            while let Some(p) = self.early.remove(&self.next) {
                p.into_iter().for_each(&mut hand);
                self.next += 1;
            }
        } else if seq > self.next && self.done.is_none_or(|end| seq < end) {
            self.early.entry(seq).or_insert(partial);
        } else {
            tracing::debug!(seq, next = self.next, end = ?self.done, "dropped a partial seen before, or past the stream's end");
        }
    }

    /// Takes the count of partials the response announced (an extension;
    /// the same as the `done`'s `seq`, which may not have come yet).
    pub(super) fn ends_at(&mut self, partials: u64) {
        if self.numbered && self.done.is_none() {
            self.done = Some(partials);
        }
    }

    /// Whether partials are known to be missing: the stream's end is known
    /// (its `done`, or the response's count), and not all before it have
    /// been handed over. Never for a v0.1 server's stream, which has no end
    /// to wait for.
    pub(super) fn missing(&self) -> bool {
        // `ends_at` records no end for an unnumbered stream.
        self.done.is_some_and(|end| self.next < end)
    }

    /// Gives up on the partials still missing: hands over the ones held, in
    /// order, and says how many were skipped (`None` when the stream's end
    /// is unknown, so is the count).
    pub(super) fn give_up(&mut self, mut hand: impl FnMut(Partial)) -> Option<u64> {
        let mut handed = self.next;
        for (seq, p) in std::mem::take(&mut self.early) {
            p.into_iter().for_each(&mut hand);
            handed += 1;
            self.next = seq + 1;
        }
        let missing = self.done.map(|end| end.saturating_sub(handed));
        self.next = self.next.max(self.done.unwrap_or(0));
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::{InOrder, StreamEvent};
    use crate::protocol::envelope::Partial;

    fn text(seq: u64, s: &str) -> StreamEvent {
        StreamEvent::Partial(seq, Some(Partial::Text(s.into())))
    }

    fn done(seq: u64) -> StreamEvent {
        StreamEvent::Done(seq)
    }

    fn run(order: &mut InOrder, events: Vec<StreamEvent>) -> Vec<Partial> {
        let mut out = Vec::new();
        for e in events {
            order.take(e, |p| out.push(p));
        }
        out
    }

    fn texts(v: &[&str]) -> Vec<Partial> {
        v.iter().map(|s| Partial::Text((*s).into())).collect()
    }

    #[test]
    fn early_partials_wait_for_their_turn() {
        let mut order = InOrder::new(true);
        let out = run(&mut order, vec![text(2, "c"), text(0, "a"), done(3), text(1, "b")]);
        assert_eq!(out, texts(&["a", "b", "c"]));
        assert!(!order.missing());
    }

    #[test]
    fn partials_are_missing_once_the_end_is_known_and_some_before_it_have_not_come() {
        let mut order = InOrder::new(true);
        let out = run(&mut order, vec![text(0, "a"), text(2, "c")]);
        assert_eq!(out.len(), 1);
        assert!(!order.missing(), "no end known yet: nothing to wait for");
        run(&mut order, vec![done(4)]);
        assert!(order.missing(), "seqs 1 and 3 are missing");
        let out = run(&mut order, vec![text(1, "b")]);
        assert_eq!(out, texts(&["b", "c"]));
        assert!(order.missing(), "seq 3 is missing");
        run(&mut order, vec![text(3, "d")]);
        assert!(!order.missing());
        // The response's count, before the done: the same end.
        let mut counted = InOrder::new(true);
        counted.ends_at(2);
        assert!(counted.missing());
        run(&mut counted, vec![text(1, "b"), text(0, "a")]);
        assert!(!counted.missing());
        // An empty stream: just its done.
        let mut empty = InOrder::new(true);
        run(&mut empty, vec![done(0)]);
        assert!(!empty.missing());
    }

    #[test]
    fn a_partial_with_nothing_to_hand_over_still_takes_its_place() {
        let mut order = InOrder::new(true);
        let out = run(
            &mut order,
            vec![StreamEvent::Partial(1, None), text(0, "a"), text(2, "c"), done(3)],
        );
        assert_eq!(out, texts(&["a", "c"]));
        assert!(!order.missing());
    }

    #[test]
    fn repeats_are_dropped() {
        let mut order = InOrder::new(true);
        let out = run(
            &mut order,
            vec![text(0, "a"), text(2, "c"), text(0, "a"), text(2, "c"), text(1, "b")],
        );
        assert_eq!(out, texts(&["a", "b", "c"]));
        // A call run again from the start after a fail-over repeats 0..
        let out = run(&mut order, vec![text(0, "a"), text(1, "b"), done(3)]);
        assert!(out.is_empty());
        assert!(!order.missing());
    }

    #[test]
    fn giving_up_hands_over_what_is_held_and_counts_the_gaps() {
        let mut order = InOrder::new(true);
        let out = run(&mut order, vec![text(0, "a"), text(2, "c"), text(4, "e"), done(6)]);
        assert_eq!(out, texts(&["a"]));
        let mut rest = Vec::new();
        assert_eq!(order.give_up(|p| rest.push(p)), Some(3));
        assert_eq!(rest, texts(&["c", "e"]));
        // Stragglers after that are repeats or past the end.
        assert!(run(&mut order, vec![text(1, "b"), text(5, "f")]).is_empty());
        // Without a done, the count is unknown.
        let mut open = InOrder::new(true);
        run(&mut open, vec![text(1, "b")]);
        let mut rest = Vec::new();
        assert_eq!(open.give_up(|p| rest.push(p)), None);
        assert_eq!(rest, texts(&["b"]));
    }

    #[test]
    fn a_v01_stream_passes_in_arrival_order() {
        let mut order = InOrder::new(false);
        // A v0.1 server's seq is a clock in milliseconds, and it sends no done.
        let out = run(
            &mut order,
            vec![text(1_733_000_000_200, "b"), text(1_733_000_000_100, "a")],
        );
        assert_eq!(out, texts(&["b", "a"]));
        order.ends_at(2);
        assert!(!order.missing());
    }
}
