//! Gateway settings, read from `wrangler.toml` `[vars]` with SPEC defaults.

/// Every tunable of the gateway. `Default` is the SPEC's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Subscriptions per connection (`MAX_SUBSCRIPTIONS`).
    pub max_subscriptions: usize,
    /// Client frames per 60 s (`MAX_MESSAGES_PER_MINUTE`).
    pub max_messages_per_minute: u32,
    /// Client frames per burst window (`BURST_LIMIT`).
    pub burst_limit: u32,
    /// Burst window in seconds (`BURST_WINDOW_S`).
    pub burst_window_s: u32,
    /// Namespaces allowed for `NAME:ID` channels (`NAMESPACES`, comma separated).
    pub namespaces: Vec<String>,
    /// Seconds a socket may stay unauthenticated (`AUTH_TIMEOUT_S`).
    pub auth_timeout_s: u32,
    /// Leeway for `exp`/`nbf` in seconds (`JWT_LEEWAY_S`).
    pub jwt_leeway_s: u32,
    /// Events kept in a channel's history (`HISTORY_MAX_EVENTS`).
    pub history_max_events: u64,
    /// Seconds an event is kept in history (`HISTORY_MAX_AGE_S`).
    pub history_max_age_s: u64,
    /// Seconds an event `id` is remembered for idempotency (`IDEMPOTENCY_WINDOW_S`).
    pub idempotency_window_s: u64,
    /// Seconds of silence after which a client that heartbeats (has pinged)
    /// is closed with 1001 (`HEARTBEAT_TIMEOUT_S`). Silence alone never
    /// closes a client that never pinged.
    pub heartbeat_timeout_s: u32,
    /// Seconds of client silence after which a socket gets a keep-alive frame,
    /// and again every this many seconds while silent (`KEEPALIVE_S`).
    pub keepalive_s: u32,
    /// Hub shards that hold `/ws` sockets (`HUB_SHARDS`).
    pub hub_shards: u32,
    /// Sockets a hub shard takes before new `/ws` sockets go to the next
    /// (`HUB_FILL`; 0 spreads them at random). See `core::placement`.
    pub hub_fill: u32,
    /// Publish requests one channel works on at once before it answers 503
    /// `OVERLOADED` (`PUBLISH_QUEUE_MAX`).
    pub publish_queue_max: usize,
    /// Test-only fault: a room drops every Nth push to a hub as if the call
    /// failed (`TEST_DROP_HUB_DELIVERY_EVERY`; 0, the default, never).
    pub test_drop_hub_delivery_every: u64,
    /// Client message types forwarded to the command backend (`COMMANDS`,
    /// comma separated).
    pub commands: Vec<String>,
    /// Where commands are forwarded (`COMMAND_URL`); `None` answers every
    /// command `COMMAND_FAILED` with `not_configured`.
    pub command_url: Option<String>,
    /// How long a command waits for the backend (`COMMAND_TIMEOUT_MS`).
    pub command_timeout_ms: u32,
    /// Namespaces whose channels keep presence (`PRESENCE_NAMESPACES`).
    pub presence_namespaces: Vec<String>,
    /// `/metrics` without a token (`METRICS_PUBLIC` set to anything but
    /// empty, `0` or `false`).
    pub metrics_public: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_subscriptions: 10,
            max_messages_per_minute: 1000,
            burst_limit: 50,
            burst_window_s: 5,
            namespaces: vec!["conversation".to_owned()],
            auth_timeout_s: 10,
            jwt_leeway_s: 30,
            history_max_events: 1000,
            history_max_age_s: 600,
            idempotency_window_s: 600,
            heartbeat_timeout_s: 90,
            keepalive_s: 45,
            hub_shards: 4,
            hub_fill: 256,
            publish_queue_max: 64,
            test_drop_hub_delivery_every: 0,
            commands: vec!["stream_control".to_owned()],
            command_url: None,
            command_timeout_ms: 5000,
            presence_namespaces: vec!["conversation".to_owned()],
            metrics_public: false,
        }
    }
}

impl Config {
    /// Builds the config from a variable lookup (the Worker's `env.var`), keeping
    /// the default for anything absent or unparsable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let d = Config::default();
        fn num<T: std::str::FromStr>(v: Option<String>, default: T) -> T {
            v.and_then(|s| s.trim().parse().ok()).unwrap_or(default)
        }
        fn list(v: Option<String>, default: Vec<String>) -> Vec<String> {
            v.map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or(default)
        }
        let namespaces = list(lookup("NAMESPACES"), d.namespaces);
        Config {
            max_subscriptions: num(lookup("MAX_SUBSCRIPTIONS"), d.max_subscriptions),
            max_messages_per_minute: num(
                lookup("MAX_MESSAGES_PER_MINUTE"),
                d.max_messages_per_minute,
            ),
            burst_limit: num(lookup("BURST_LIMIT"), d.burst_limit),
            burst_window_s: num(lookup("BURST_WINDOW_S"), d.burst_window_s).max(1),
            namespaces,
            auth_timeout_s: num(lookup("AUTH_TIMEOUT_S"), d.auth_timeout_s),
            jwt_leeway_s: num(lookup("JWT_LEEWAY_S"), d.jwt_leeway_s),
            history_max_events: num(lookup("HISTORY_MAX_EVENTS"), d.history_max_events).max(1),
            history_max_age_s: num(lookup("HISTORY_MAX_AGE_S"), d.history_max_age_s),
            idempotency_window_s: num(lookup("IDEMPOTENCY_WINDOW_S"), d.idempotency_window_s),
            heartbeat_timeout_s: num(lookup("HEARTBEAT_TIMEOUT_S"), d.heartbeat_timeout_s).max(1),
            keepalive_s: num(lookup("KEEPALIVE_S"), d.keepalive_s).max(1),
            hub_shards: num(lookup("HUB_SHARDS"), d.hub_shards).clamp(1, 1024),
            hub_fill: num(lookup("HUB_FILL"), d.hub_fill),
            publish_queue_max: num(lookup("PUBLISH_QUEUE_MAX"), d.publish_queue_max).max(1),
            test_drop_hub_delivery_every: num(
                lookup("TEST_DROP_HUB_DELIVERY_EVERY"),
                d.test_drop_hub_delivery_every,
            ),
            commands: list(lookup("COMMANDS"), d.commands),
            command_url: lookup("COMMAND_URL").filter(|u| !u.trim().is_empty()),
            command_timeout_ms: num(lookup("COMMAND_TIMEOUT_MS"), d.command_timeout_ms).max(1),
            presence_namespaces: list(lookup("PRESENCE_NAMESPACES"), d.presence_namespaces),
            metrics_public: lookup("METRICS_PUBLIC")
                .is_some_and(|v| !matches!(v.trim(), "" | "0" | "false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_values() {
        let c = Config::default();
        assert_eq!(c.max_subscriptions, 10);
        assert_eq!(c.max_messages_per_minute, 1000);
        assert_eq!((c.burst_limit, c.burst_window_s), (50, 5));
        assert_eq!(c.namespaces, vec!["conversation"]);
        assert_eq!((c.heartbeat_timeout_s, c.keepalive_s), (90, 45));
        assert_eq!(c.publish_queue_max, 64);
        assert_eq!(c.test_drop_hub_delivery_every, 0);
        assert_eq!(c.commands, vec!["stream_control"]);
        assert_eq!((c.command_url, c.command_timeout_ms), (None, 5000));
        assert_eq!(c.presence_namespaces, vec!["conversation"]);
    }

    #[test]
    fn lookup_overrides_and_ignores_garbage() {
        let c = Config::from_lookup(|k| match k {
            "BURST_LIMIT" => Some("7".into()),
            "MAX_SUBSCRIPTIONS" => Some("lots".into()),
            "NAMESPACES" => Some("conversation, room ,".into()),
            _ => None,
        });
        assert_eq!(c.burst_limit, 7);
        assert_eq!(c.max_subscriptions, 10);
        assert_eq!(c.namespaces, vec!["conversation", "room"]);
        assert!(!c.metrics_public);
        for (v, public) in [
            ("1", true),
            ("yes", true),
            ("0", false),
            ("false", false),
            ("", false),
        ] {
            let c = Config::from_lookup(|k| (k == "METRICS_PUBLIC").then(|| v.to_owned()));
            assert_eq!(c.metrics_public, public, "{v:?}");
        }
    }
}
