//! At most one run per call: the window of recent calls that a QoS 1
//! redelivery or a replay is recognised by. A data structure only: no I/O,
//! and no clock of its own (callers pass the time).
//!
//! A call is known by its tool, `call_id` and reply topic. The reply topic is
//! part of the key so that a caller who reuses someone else's `call_id` is
//! never answered with that caller's cached result: a cached response only
//! ever goes back where it went the first time.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use siphasher::sip128::{Hash128, Hasher128, SipHasher13};

/// How many finished calls are remembered, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupeWindow {
    /// The most calls remembered (0 turns deduplication off).
    pub capacity: usize,
    /// How long a call is remembered.
    pub max_age: Duration,
    /// The most bytes of cached responses kept: each is copied into one
    /// buffer of this size, where the newest write over the oldest. A
    /// duplicate of a call whose response is gone is still not run again,
    /// but gets an error instead of the original result. The default, 8 MiB,
    /// holds every response of the window when they are under 800 bytes,
    /// and keeps a server of large results small.
    pub max_cached_bytes: usize,
}

impl Default for DedupeWindow {
    fn default() -> Self {
        DedupeWindow {
            capacity: 10_000,
            max_age: Duration::from_secs(600),
            max_cached_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What the window knows of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A call not seen before (now recorded as running).
    New,
    /// The same call is running now.
    Running,
    /// The call finished; its encoded response, if still cached.
    Finished(Option<Bytes>),
}

/// A call's identity: tool, reply topic and call id, as a 128-bit digest
/// keyed per process. Keys are made for every call and kept for thousands:
/// a digest costs no allocation, copies freely into the expiry queue, and
/// leaves nothing to free (out of the cache by then) when it expires.
///
/// Two calls share a key only if their parts are equal, or with a chance of
/// 2^-128: the digest is SipHash-1-3 with its 128-bit output, under a random
/// key, so that callers can neither predict it nor choose call ids that
/// collide. One pass makes both halves (two 64-bit hashes took twice the
/// time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallKey {
    /// Also the key's hash in the window's maps.
    hash: u64,
    check: u64,
}

impl Hash for CallKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl CallKey {
    pub(crate) fn new(tool: &str, call_id: &str, reply_topic: &str) -> Self {
        static KEY: OnceLock<(u64, u64)> = OnceLock::new();
        let &(k0, k1) = KEY.get_or_init(|| {
            // The standard library's per-process random keys, drawn from the
            // operating system.
            let random = RandomState::new();
            (random.hash_one(0u8), random.hash_one(1u8))
        });
        let mut digest = SipHasher13::new_with_keys(k0, k1);
        // Each `str` hashes with a 0xff after it, a byte UTF-8 never holds,
        // so the parts cannot run together.
        (tool, reply_topic, call_id).hash(&mut digest);
        let Hash128 { h1, h2 } = digest.finish128();
        CallKey { hash: h1, check: h2 }
    }
}

enum State {
    Running,
    /// Finished; where its response was copied into the [`Ring`], if it was.
    Finished(Option<Cached>),
}

/// Where a cached response starts in the [`Ring`]'s stream of bytes, and
/// its length.
#[derive(Clone, Copy)]
struct Cached {
    at: u64,
    len: usize,
}

/// The cached responses, copied one after the other into one buffer that
/// is written over from its start once full: the oldest go first, and a
/// response's own buffer is freed as soon as it is sent. Kept by reference
/// instead, each response held its allocation for thousands of calls, so
/// that every new one was written to memory long out of the CPU's cache.
/// The copy in is made with stores that bypass the cache: the ring's next
/// bytes are always out of it (written a lap ago), and plain stores there
/// cost a busy server some 5 µs for each 10 KiB response (reading each line
/// in, and evicting what the next call needed). See BENCHMARKS.md.
struct Ring {
    buf: Vec<u8>,
    cap: usize,
    /// Where the next response goes, counted in bytes from the first.
    head: u64,
}

impl Ring {
    fn new(cap: usize) -> Self {
        // Grown as responses come: a server that has sent fewer bytes of
        // responses than the budget holds no more than it sent.
        Ring {
            buf: Vec::new(),
            cap,
            head: 0,
        }
    }

    /// Copies `bytes` in; `None` if they are more than the whole ring.
    fn put(&mut self, bytes: &[u8]) -> Option<Cached> {
        let len = bytes.len();
        if len > self.cap {
            return None;
        }
        let mut at = self.head;
        let off = self.offset(at);
        if off + len > self.cap {
            // Not split across the end: the rest of this lap stays unused.
            at += (self.cap - off) as u64;
        }
        let off = self.offset(at);
        if self.buf.len() < off + len {
            self.buf.resize(off + len, 0);
        }
        crate::protocol::json::copy_streaming(&mut self.buf[off..off + len], bytes);
        self.head = at + len as u64;
        Some(Cached { at, len })
    }

    /// The response at `cached`, unless written over since.
    fn get(&self, cached: Cached) -> Option<&[u8]> {
        // Written over once the head has gone a whole lap past its start.
        if self.head > cached.at + self.cap as u64 {
            return None;
        }
        let off = self.offset(cached.at);
        Some(&self.buf[off..off + cached.len])
    }

    fn offset(&self, at: u64) -> usize {
        if self.cap == 0 {
            return 0;
        }
        (at % self.cap as u64) as usize
    }
}

/// A map keyed by calls, that hashes each key once, when it is made.
pub(crate) type CallMap<V> = HashMap<CallKey, V, BuildHasherDefault<Prehashed>>;

/// Hands on the hash a [`CallKey`] carries.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only CallKey is hashed here, with write_u64")
    }
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// The window itself. Not thread-safe: the dispatcher holds it in a mutex.
pub(crate) struct Window {
    limits: DedupeWindow,
    /// Each call's state, and the number of its entry in `order`.
    calls: CallMap<(u64, State)>,
    /// Calls in the order they were first seen, to expire the oldest.
    order: VecDeque<(u64, Instant, CallKey)>,
    next_entry: u64,
    responses: Ring,
}

impl Window {
    pub(crate) fn new(limits: DedupeWindow) -> Self {
        Window {
            limits,
            calls: CallMap::default(),
            order: VecDeque::new(),
            next_entry: 0,
            responses: Ring::new(limits.max_cached_bytes),
        }
    }

    /// Looks a call up, and records it as running if it is new.
    pub(crate) fn check(&mut self, key: &CallKey, now: Instant) -> Seen {
        if self.limits.capacity == 0 {
            return Seen::New;
        }
        self.expire(now);
        match self.calls.get(key) {
            Some((_, State::Running)) => return Seen::Running,
            Some((_, State::Finished(cached))) => {
                let response = cached.and_then(|c| self.responses.get(c)).map(Bytes::copy_from_slice);
                return Seen::Finished(response);
            }
            None => {}
        }
        while self.order.len() >= self.limits.capacity {
            self.evict_oldest();
        }
        let entry = self.next_entry;
        self.next_entry += 1;
        self.calls.insert(*key, (entry, State::Running));
        self.order.push_back((entry, now, *key));
        Seen::New
    }

    /// Records a call's response, so that a duplicate gets it again: a
    /// copy, in the ring of cached responses, where the newest write over
    /// the oldest (a duplicate comes soon after its call, if it comes at all).
    pub(crate) fn finish(&mut self, key: &CallKey, response: &[u8]) {
        if let Some((_, state)) = self.calls.get_mut(key) {
            *state = State::Finished(self.responses.put(response));
        }
    }

    /// Forgets a call that did not run after all (refused before it
    /// started), so that sending it again is not taken for a duplicate.
    pub(crate) fn forget(&mut self, key: &CallKey) {
        self.calls.remove(key);
    }

    /// How many calls are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, seen, _)) = self.order.front() {
            if now.duration_since(*seen) < self.limits.max_age {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((entry, _, key)) = self.order.pop_front() {
            // A call forgotten earlier may have come back under a newer entry.
            if self.calls.get(&key).is_some_and(|(e, _)| *e == entry) {
                self.forget(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> CallKey {
        CallKey::new("echo", id, "ns/mcp/clients/a/responses")
    }

    fn limits(capacity: usize, max_age: Duration, max_cached_bytes: usize) -> DedupeWindow {
        DedupeWindow {
            capacity,
            max_age,
            max_cached_bytes,
        }
    }

    #[test]
    fn a_duplicate_is_running_then_finished_with_its_response() {
        let now = Instant::now();
        let mut w = Window::new(DedupeWindow::default());
        assert_eq!(w.check(&key("c1"), now), Seen::New);
        assert_eq!(w.check(&key("c1"), now), Seen::Running);
        w.finish(&key("c1"), &Bytes::from_static(b"r1"));
        assert_eq!(
            w.check(&key("c1"), now),
            Seen::Finished(Some(Bytes::from_static(b"r1")))
        );
        // Same call id, other reply topic: another caller's call.
        let other = CallKey::new("echo", "c1", "ns/mcp/clients/b/responses");
        assert_eq!(w.check(&other, now), Seen::New);
    }

    #[test]
    fn the_window_is_bounded_by_count_and_age() {
        let start = Instant::now();
        let mut w = Window::new(limits(3, Duration::from_secs(10), 1024));
        for i in 0..5 {
            assert_eq!(w.check(&key(&i.to_string()), start), Seen::New);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.check(&key("0"), start), Seen::New, "evicted by count");
        let later = start + Duration::from_secs(11);
        assert_eq!(w.check(&key("z"), later), Seen::New);
        assert_eq!(w.len(), 1, "everything older than max_age expired");
    }

    /// Runs call `id`, answered with `response`.
    fn ran(w: &mut Window, id: &str, response: &[u8]) {
        w.check(&key(id), Instant::now());
        w.finish(&key(id), response);
    }

    /// What a duplicate of finished call `id` is answered with.
    fn cached(w: &mut Window, id: &str) -> Option<Bytes> {
        match w.check(&key(id), Instant::now()) {
            Seen::Finished(response) => response,
            other => panic!("{id} is {other:?}, not finished"),
        }
    }

    #[test]
    fn cached_responses_are_bounded_in_bytes_and_the_oldest_make_room() {
        let mut w = Window::new(limits(10, Duration::from_secs(10), 6));
        for (id, response) in [("a", "abc"), ("b", "de"), ("c", "fgh")] {
            ran(&mut w, id, response.as_bytes());
        }
        // "fgh" does not fit after "de": it starts the ring again, over "abc".
        assert_eq!(cached(&mut w, "a"), None, "written over by the newer");
        assert_eq!(cached(&mut w, "b"), Some(Bytes::from("de")));
        assert_eq!(cached(&mut w, "c"), Some(Bytes::from("fgh")));
        // Larger than the whole ring: not cached, and nothing written over.
        ran(&mut w, "d", b"0123456");
        assert_eq!(cached(&mut w, "d"), None);
        assert_eq!(cached(&mut w, "b"), Some(Bytes::from("de")));
        // The next one goes after "fgh", over "de".
        ran(&mut w, "e", b"ijk");
        assert_eq!(cached(&mut w, "b"), None);
        assert_eq!(cached(&mut w, "c"), Some(Bytes::from("fgh")));
        assert_eq!(cached(&mut w, "e"), Some(Bytes::from("ijk")));
    }

    /// A response as large as the ring fills it alone; an empty one is
    /// cached too.
    #[test]
    fn the_ring_takes_a_response_as_large_as_itself_and_an_empty_one() {
        let mut w = Window::new(limits(10, Duration::from_secs(10), 4));
        ran(&mut w, "x", b"ab");
        ran(&mut w, "full", b"wxyz");
        assert_eq!(cached(&mut w, "x"), None);
        assert_eq!(cached(&mut w, "full"), Some(Bytes::from("wxyz")));
        ran(&mut w, "empty", b"");
        assert_eq!(cached(&mut w, "empty"), Some(Bytes::new()));
        assert_eq!(cached(&mut w, "full"), Some(Bytes::from("wxyz")));
    }

    /// Long responses go in with streaming stores, at every alignment the
    /// ring's head comes to: each comes back byte for byte.
    #[test]
    fn long_responses_come_back_whole_at_any_offset() {
        let mut w = Window::new(limits(100, Duration::from_secs(10), 64 * 1024));
        let responses: Vec<Vec<u8>> = (0..12usize)
            .map(|i| (0..1024 + i * 331).map(|b| (b * 31 + i) as u8).collect())
            .collect();
        for (i, response) in responses.iter().enumerate() {
            ran(&mut w, &format!("long{i}"), response);
        }
        for (i, response) in responses.iter().enumerate() {
            let kept = cached(&mut w, &format!("long{i}"));
            assert_eq!(kept.as_deref(), Some(&response[..]), "response {i}");
        }
    }

    #[test]
    fn keys_keep_their_parts_apart() {
        let long_topic = format!("lab/mcp/clients/{}/responses", "c".repeat(300));
        for topic in ["lab/mcp/clients/scout/responses", long_topic.as_str()] {
            let key = CallKey::new("echo", "id-1", topic);
            assert_eq!(key, CallKey::new("echo", "id-1", topic));
            assert_ne!(key, CallKey::new("echo", "id-2", topic));
            assert_ne!(key, CallKey::new("echo", "id-1", &topic[1..]));
            // The parts cannot run together into another key's.
            assert_ne!(key, CallKey::new("echoi", "d-1", topic));
            assert_ne!(key, CallKey::new(&format!("echo{topic}"), "id-1", ""));
        }
    }

    #[test]
    fn capacity_zero_turns_it_off() {
        let mut w = Window::new(limits(0, Duration::from_secs(10), 4));
        assert_eq!(w.check(&key("a"), Instant::now()), Seen::New);
        assert_eq!(w.check(&key("a"), Instant::now()), Seen::New);
    }
}
