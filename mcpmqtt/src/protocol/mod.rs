//! The wire protocol as plain data and pure functions: topics, name rules,
//! cards, envelopes, and the decoding of an incoming call. No I/O, no tasks,
//! and no import from the rest of the crate: every other module builds on it.

pub(crate) mod card;
pub(crate) mod envelope;
pub(crate) mod inbound;
pub(crate) mod json;
pub(crate) mod names;
pub(crate) mod topics;
