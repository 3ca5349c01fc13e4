//! Operator metrics: the counters each isolate keeps, and the Prometheus
//! text exposition of everything `/metrics` gathers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Upper bounds (ms) of the publish latency histogram's buckets.
pub const LATENCY_BUCKETS_MS: [f64; 11] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// Which kind of socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/ws`, held by a hub.
    Hub,
    /// `/ws/{channel}`, held by the channel's room.
    Direct,
}

impl Route {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Route::Hub => "hub",
            Route::Direct => "direct",
        }
    }
}

/// What one isolate counted since it started. Objects sharing an isolate
/// share its counters, so `/metrics` adds each isolate once (by `isolate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// A random id of the isolate.
    pub isolate: String,
    /// Sockets opened and closed, by route label.
    pub opened: BTreeMap<String, u64>,
    pub closed: BTreeMap<String, u64>,
    /// Refusals by error code (or close reason for refusals without one).
    pub refusals: BTreeMap<String, u64>,
    /// Durable Objects started, by class (`hub`, `room`): a hibernated
    /// object starts again on its next event.
    pub starts: BTreeMap<String, u64>,
    /// Hub subscribes by how they got their starting state: `called` the
    /// room, or `reused` the hub's last answer (`core::attach_memo`).
    pub attaches: BTreeMap<String, u64>,
    /// Publish requests a room handled, events it stored, and the sockets
    /// they were sent to (direct and through hubs).
    pub publish_requests: u64,
    pub events: u64,
    pub deliveries: u64,
    /// Publish handling time: count per bucket of [`LATENCY_BUCKETS_MS`]
    /// (not cumulative; the last is over the largest bound), and the sum.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_ms: f64,
}

impl Counters {
    /// Counts one publish request of `events` stored events, sent to
    /// `deliveries` sockets, handled in `ms`.
    pub fn publish(&mut self, events: u64, deliveries: u64, ms: f64) {
        self.publish_requests += 1;
        self.events += events;
        self.deliveries += deliveries;
        if self.latency_buckets.len() != LATENCY_BUCKETS_MS.len() + 1 {
            self.latency_buckets = vec![0; LATENCY_BUCKETS_MS.len() + 1];
        }
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_buckets[i] += 1;
        self.latency_sum_ms += ms;
    }

    /// Adds another isolate's counters.
    pub fn add(&mut self, other: &Counters) {
        for (mine, theirs) in [
            (&mut self.opened, &other.opened),
            (&mut self.closed, &other.closed),
            (&mut self.refusals, &other.refusals),
            (&mut self.starts, &other.starts),
            (&mut self.attaches, &other.attaches),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
        self.publish_requests += other.publish_requests;
        self.events += other.events;
        self.deliveries += other.deliveries;
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        for (m, t) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
            *m += t;
        }
        self.latency_sum_ms += other.latency_sum_ms;
    }
}

/// The sum of the counters of distinct isolates.
pub fn sum_isolates<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Counters {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = Counters::default();
    for c in all {
        if seen.insert(c.isolate.clone()) {
            total.add(c);
        }
    }
    total
}

/// One channel as `/v1/stats` and `/metrics` report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ChannelCounts {
    /// Subscribers over every route.
    pub subscribers: u64,
    /// The head: events stored so far.
    pub seq: u64,
    /// Events sent to sockets, each socket counting once per event.
    pub delivered: u64,
}

/// The current state `/metrics` reports beside the counters.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Open sockets by route.
    pub connections: BTreeMap<&'static str, u64>,
    pub channels: BTreeMap<String, ChannelCounts>,
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its `HELP` and `TYPE` lines, then its samples (each
/// `labels value`, with `labels` empty or `{…}`).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The Prometheus text format (version 0.0.4) of `gauges` and `counters`.
pub fn render(gauges: &Gauges, counters: &Counters) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "uip_connections",
        "gauge",
        "Open WebSocket connections by route.",
        ["hub", "direct"]
            .iter()
            .map(|r| {
                let n = gauges.connections.get(r).copied().unwrap_or(0);
                (format!("{{route=\"{r}\"}}"), n.to_string())
            })
            .collect(),
    );
    family(
        &mut out,
        "uip_channel_subscribers",
        "gauge",
        "Subscribers per channel, over every route.",
        gauges
            .channels
            .iter()
            .map(|(c, n)| {
                (
                    format!("{{channel=\"{}\"}}", label(c)),
                    n.subscribers.to_string(),
                )
            })
            .collect(),
    );
    family(
        &mut out,
        "uip_channel_events_total",
        "counter",
        "Events stored per channel (its head seq).",
        gauges
            .channels
            .iter()
            .map(|(c, n)| (format!("{{channel=\"{}\"}}", label(c)), n.seq.to_string()))
            .collect(),
    );
    family(
        &mut out,
        "uip_channel_deliveries_total",
        "counter",
        "Events sent to sockets per channel, since the channel began.",
        gauges
            .channels
            .iter()
            .map(|(c, n)| {
                (
                    format!("{{channel=\"{}\"}}", label(c)),
                    n.delivered.to_string(),
                )
            })
            .collect(),
    );
    for (name, help, map, key) in [
        (
            "uip_connections_opened_total",
            "WebSocket connections accepted, by route.",
            &counters.opened,
            "route",
        ),
        (
            "uip_connections_closed_total",
            "WebSocket connections closed, by route.",
            &counters.closed,
            "route",
        ),
        (
            "uip_refusals_total",
            "Sockets refused or closed by the server, by error code or close reason.",
            &counters.refusals,
            "code",
        ),
        (
            "uip_object_starts_total",
            "Durable Objects started (first use or a wake from hibernation), by class.",
            &counters.starts,
            "object",
        ),
        (
            "uip_hub_attaches_total",
            "Hub subscribes by how they got their starting state: a room call or a reused answer.",
            &counters.attaches,
            "outcome",
        ),
    ] {
        family(
            &mut out,
            name,
            "counter",
            help,
            map.iter()
                .map(|(k, n)| (format!("{{{key}=\"{}\"}}", label(k)), n.to_string()))
                .collect(),
        );
    }
    for (name, help, n) in [
        (
            "uip_publish_requests_total",
            "Publish requests the rooms handled.",
            counters.publish_requests,
        ),
        (
            "uip_events_published_total",
            "Events stored by publishes.",
            counters.events,
        ),
        (
            "uip_deliveries_total",
            "Events sent to sockets (each socket counts once per event).",
            counters.deliveries,
        ),
    ] {
        family(
            &mut out,
            name,
            "counter",
            help,
            vec![(String::new(), n.to_string())],
        );
    }
    let mut samples = Vec::new();
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
        cumulative += counters.latency_buckets.get(i).copied().unwrap_or(0);
        samples.push((
            format!("_bucket{{le=\"{}\"}}", bound / 1000.0),
            cumulative.to_string(),
        ));
    }
    samples.push((
        "_bucket{le=\"+Inf\"}".to_owned(),
        counters.publish_requests.to_string(),
    ));
    samples.push((
        "_sum".to_owned(),
        (counters.latency_sum_ms / 1000.0).to_string(),
    ));
    samples.push(("_count".to_owned(), counters.publish_requests.to_string()));
    family(
        &mut out,
        "uip_publish_duration_seconds",
        "histogram",
        "Time a room took to store and deliver a publish request.",
        samples,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_fill_the_histogram() {
        let mut c = Counters::default();
        c.publish(3, 30, 0.5);
        c.publish(1, 10, 40.0);
        c.publish(1, 0, 9000.0);
        assert_eq!((c.publish_requests, c.events, c.deliveries), (3, 5, 40));
        assert_eq!(c.latency_buckets[0], 1);
        assert_eq!(c.latency_buckets[4], 1, "40 ms is in the 50 ms bucket");
        assert_eq!(c.latency_buckets[11], 1, "over 5 s");
    }

    #[test]
    fn isolates_are_added_once_each() {
        let mut a = Counters {
            isolate: "a".into(),
            ..Counters::default()
        };
        a.refusals.insert("AUTH_FAILED".into(), 2);
        let mut b = a.clone();
        b.isolate = "b".into();
        let total = sum_isolates([&a, &a, &b]);
        assert_eq!(total.refusals["AUTH_FAILED"], 4);
    }

    #[test]
    fn the_exposition_has_help_type_and_labelled_samples() {
        let mut counters = Counters::default();
        counters.publish(2, 4, 3.0);
        counters.refusals.insert("FORBIDDEN".into(), 1);
        let mut gauges = Gauges::default();
        gauges.connections.insert("hub", 5);
        gauges.channels.insert(
            "conversation:a\"b".into(),
            ChannelCounts {
                subscribers: 2,
                seq: 9,
                delivered: 18,
            },
        );
        let text = render(&gauges, &counters);
        assert!(text.contains("# TYPE uip_connections gauge\n"));
        assert!(text.contains("uip_connections{route=\"hub\"} 5\n"));
        assert!(text.contains("uip_connections{route=\"direct\"} 0\n"));
        assert!(text.contains("uip_channel_subscribers{channel=\"conversation:a\\\"b\"} 2\n"));
        assert!(text.contains("uip_refusals_total{code=\"FORBIDDEN\"} 1\n"));
        assert!(text.contains("uip_publish_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("uip_publish_duration_seconds_count 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
