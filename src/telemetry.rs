//! What the gateway tells operators: one JSON log line per connection open
//! and close, publish, refusal and error (never a token: lines carry codes,
//! ids and channel names only), and the counters `/metrics` adds up.

use std::cell::RefCell;

use serde_json::{json, Value};

use crate::core::metrics::{Counters, Route};
use crate::core::refusal::Refusal;

thread_local! {
    /// This isolate's counters, named by a random id so `/metrics` adds each
    /// isolate once however many objects share it.
    static COUNTERS: RefCell<Counters> = RefCell::new(Counters {
        isolate: format!("{:016x}", (js_sys::Math::random() * 2f64.powi(53)) as u64),
        ..Counters::default()
    });
}

/// A copy of this isolate's counters.
pub fn counters() -> Counters {
    COUNTERS.with(|c| c.borrow().clone())
}

fn count(f: impl FnOnce(&mut Counters)) {
    COUNTERS.with(|c| f(&mut c.borrow_mut()));
}

/// Writes one structured log line.
fn line(level: &str, event: &str, mut fields: Value) {
    if let Some(obj) = fields.as_object_mut() {
        obj.insert("level".into(), level.into());
        obj.insert("event".into(), event.into());
    }
    match level {
        "error" => worker::console_error!("{fields}"),
        _ => worker::console_log!("{fields}"),
    }
}

/// A socket was accepted.
pub fn opened(route: Route, connection_id: &str) {
    count(|c| *c.opened.entry(route.label().into()).or_default() += 1);
    line(
        "info",
        "connection.open",
        json!({"route": route.label(), "connection_id": connection_id}),
    );
}

/// A Durable Object of class `object` started (first use, or a wake after
/// hibernation).
pub fn started(object: &'static str) {
    count(|c| *c.starts.entry(object.into()).or_default() += 1);
}

/// Counts a hub subscribe's starting state: `called` the room or `reused`.
pub fn attached(outcome: &'static str) {
    count(|c| *c.attaches.entry(outcome.into()).or_default() += 1);
}

/// A socket closed, with the close code the runtime reported.
pub fn closed(route: Route, connection_id: &str, code: usize) {
    count(|c| *c.closed.entry(route.label().into()).or_default() += 1);
    line(
        "info",
        "connection.close",
        json!({"route": route.label(), "connection_id": connection_id, "code": code}),
    );
}

/// A socket was refused or closed by the server.
pub fn refused(refusal: &Refusal) {
    let close = refusal.close();
    let code = refusal
        .error()
        .map(|(_, e)| e.code.as_str().to_owned())
        .unwrap_or_else(|| close.reason().to_owned());
    count(|c| *c.refusals.entry(code.clone()).or_default() += 1);
    line(
        "info",
        "refusal",
        json!({"code": code, "close": close.code()}),
    );
}

/// A room handled a publish request.
pub fn published(channel: &str, seqs: Option<(u64, u64)>, events: u64, deliveries: u64, ms: f64) {
    count(|c| c.publish(events, deliveries, ms));
    line(
        "info",
        "publish",
        json!({"channel": channel, "count": events, "first_seq": seqs.map(|s| s.0),
               "last_seq": seqs.map(|s| s.1), "delivered": deliveries, "ms": ms}),
    );
}

/// Something failed that an operator should see.
pub fn error(message: &str) {
    line("error", "error", json!({"message": message}));
}

/// Logs an error line, formatted like `format!`.
macro_rules! log_error {
    ($($arg:tt)*) => {
        $crate::telemetry::error(&format!($($arg)*))
    };
}
pub(crate) use log_error;
