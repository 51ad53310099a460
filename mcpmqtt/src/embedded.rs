//! Embedded broker (pending).
