//! uip-realtime: a real-time WebSocket gateway on Cloudflare Workers.
//!
//! [`core`] holds the protocol and every rule, free of I/O and unit-tested on
//! the host; the Worker (`router`) and the Durable Objects (`durable_objects/`)
//! are thin wasm32-only glue over it.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod calls;
#[cfg(target_arch = "wasm32")]
#[path = "../durable_objects/channel_room.rs"]
mod channel_room;
#[cfg(target_arch = "wasm32")]
mod commands;
#[cfg(target_arch = "wasm32")]
#[path = "../durable_objects/directory.rs"]
mod directory;
#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
#[path = "../durable_objects/hub.rs"]
mod hub;
#[cfg(target_arch = "wasm32")]
#[path = "../durable_objects/hub_store.rs"]
mod hub_store;
#[cfg(target_arch = "wasm32")]
mod keyring;
#[cfg(target_arch = "wasm32")]
mod locks;
#[cfg(target_arch = "wasm32")]
#[path = "../durable_objects/room_store.rs"]
mod room_store;
#[cfg(target_arch = "wasm32")]
mod router;
#[cfg(target_arch = "wasm32")]
mod telemetry;
