pub(crate) mod card;
pub(crate) mod envelope;
pub(crate) mod inbound;
pub(crate) mod names;
pub(crate) mod topics;
