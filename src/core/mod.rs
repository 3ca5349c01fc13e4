//! The I/O-free core: protocol types, errors, auth, channels, filters, limits
//! and snapshot rules. Nothing here depends on `worker`; the glue in `src/` and
//! `durable_objects/` carries out the decisions made here.

pub mod attach_memo;
pub mod auth;
pub mod channel;
pub mod command;
pub mod config;
pub mod dialect;
pub mod error;
pub mod filter;
pub mod gap;
pub mod gather;
pub mod history;
pub mod internal;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod placement;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod refusal;
pub mod relay;
pub mod session;
pub mod snapshot;
pub mod status;
pub mod subscriptions;
pub mod time;
