//! Integration tests against a real `wrangler dev` (workerd, Durable Objects,
//! hibernation), driven by real WebSocket and HTTP clients.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bench_smoke;
mod cli;
mod delivery;
mod deploy;
mod dialect;
mod fanout;
mod faults;
mod hub;
mod keys;
mod liveness;
mod operators;
mod persistence;
mod protocol;
mod publish;
mod resume;
mod system;
mod two_way;
