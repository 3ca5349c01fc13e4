//! A hub's subscription index: which of its connections receive which channel,
//! through which filters, and the checks a `subscribe` must pass.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value;

use super::channel::Channel;
use super::config::Config;
use super::error::{ApiError, ErrorCode};
use super::filter::Filters;
use super::internal::AttachResponse;
use super::protocol::{ServerMessage, SnapshotData, Subscribed};
use super::session::Identity;

/// Connections per channel and channels per connection, kept in step.
#[derive(Debug, Default, Clone)]
pub struct Subscriptions {
    by_channel: HashMap<String, Vec<(String, Filters)>>,
    by_conn: HashMap<String, Vec<String>>,
}

impl Subscriptions {
    /// Adds or replaces `conn`'s subscription; `true` when it is the hub's
    /// first subscriber of `channel` (the hub must register with the room).
    pub fn insert(&mut self, conn: &str, channel: &str, filters: Filters) -> bool {
        let had = self.contains(conn, channel);
        let list = self.by_channel.entry(channel.to_owned()).or_default();
        let first = list.is_empty();
        // Only a repeat scans the channel's list: with thousands of sockets on
        // one channel, a scan per new subscriber made subscribing quadratic.
        if had {
            if let Some(entry) = list.iter_mut().find(|(c, _)| c == conn) {
                entry.1 = filters;
            }
        } else {
            list.push((conn.to_owned(), filters));
            self.by_conn
                .entry(conn.to_owned())
                .or_default()
                .push(channel.to_owned());
        }
        first
    }

    /// Removes one subscription; `true` when `channel` has no subscriber left
    /// here (the hub must unregister).
    pub fn remove(&mut self, conn: &str, channel: &str) -> bool {
        if !self.contains(conn, channel) {
            return false;
        }
        let Some(list) = self.by_channel.get_mut(channel) else {
            return false;
        };
        let before = list.len();
        list.retain(|(c, _)| c != conn);
        if list.len() == before {
            return false;
        }
        if let Some(chs) = self.by_conn.get_mut(conn) {
            chs.retain(|c| c != channel);
            if chs.is_empty() {
                self.by_conn.remove(conn);
            }
        }
        if list.is_empty() {
            self.by_channel.remove(channel);
            return true;
        }
        false
    }

    /// Removes every subscription of a connection; returns the channels left
    /// without subscribers here.
    pub fn remove_conn(&mut self, conn: &str) -> Vec<String> {
        let channels = self.by_conn.get(conn).cloned().unwrap_or_default();
        channels
            .into_iter()
            .filter(|ch| self.remove(conn, ch))
            .collect()
    }

    /// The channels `conn` is subscribed to.
    pub fn channels_of(&self, conn: &str) -> &[String] {
        self.by_conn.get(conn).map_or(&[], Vec::as_slice)
    }

    /// Whether `conn` is subscribed to `channel`: a look at the connection's
    /// own few channels, not at the channel's subscribers.
    pub fn contains(&self, conn: &str, channel: &str) -> bool {
        self.channels_of(conn).iter().any(|c| c == channel)
    }

    /// The subscribers of `channel`, with their filters.
    pub fn subscribers(&self, channel: &str) -> &[(String, Filters)] {
        self.by_channel.get(channel).map_or(&[], Vec::as_slice)
    }

    /// Subscriber counts per channel.
    pub fn counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_channel.iter().map(|(c, l)| (c.as_str(), l.len()))
    }

    /// Connections with at least one subscription.
    pub fn connections(&self) -> usize {
        self.by_conn.len()
    }
}

/// Checks a `subscribe` on a multiplexed socket: the channel exists, the token
/// grants it, the filters are valid, and a new subscription stays within the
/// limit. A repeat subscribe replaces filters and never counts twice.
pub fn check_subscribe(
    identity: &Identity,
    subs: &Subscriptions,
    conn: &str,
    channel: &str,
    filters: Option<&Value>,
    config: &Config,
) -> Result<(Channel, Filters), ApiError> {
    let parsed = Channel::parse(channel, config)?;
    if !identity.claims.allows(&parsed, false) {
        return Err(ApiError::forbidden_channel(channel));
    }
    let filters = Filters::parse(&parsed, filters)?;
    if !subs.contains(conn, channel) && subs.channels_of(conn).len() >= config.max_subscriptions {
        return Err(ApiError::new(
            ErrorCode::MaxSubscriptions,
            format!(
                "at most {} subscriptions per connection; unsubscribe first",
                config.max_subscriptions
            ),
        )
        .with("max_subscriptions", config.max_subscriptions));
    }
    Ok((parsed, filters))
}

/// The frames a new subscription gets, in order: `subscribed`, then either the
/// replayed events after `since` or the `snapshot`, both through `filters`.
pub fn subscription_frames(
    channel: &str,
    filters: &Filters,
    state: &AttachResponse,
    timestamp: &str,
) -> Vec<String> {
    let mut frames = vec![ServerMessage::Subscribed {
        timestamp,
        data: Subscribed {
            channel,
            filters: filters.to_value(),
            seq: state.head,
            recovered: state.recovered,
        },
    }
    .to_json()];
    let passing = state.events.iter().filter(|e| e.passes(filters));
    if state.recovered == Some(true) {
        frames.extend(passing.map(|e| e.body.clone()));
        return frames;
    }
    let bodies: Vec<Box<RawValue>> = passing
        .filter_map(|e| RawValue::from_string(e.body.clone()).ok())
        .collect();
    frames.push(
        ServerMessage::Snapshot {
            timestamp,
            data: SnapshotData {
                channel,
                seq: state.head,
                events: bodies.iter().map(AsRef::as_ref).collect(),
            },
        }
        .to_json(),
    );
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{Claims, Scopes};
    use crate::core::internal::Delivered;
    use serde_json::json;

    fn identity(channels: Option<Vec<&str>>) -> Identity {
        Identity {
            claims: Claims {
                sub: None,
                exp: None,
                scopes: Scopes {
                    subscribe: true,
                    publish: false,
                    admin: false,
                },
                channels: channels.map(|c| c.into_iter().map(str::to_owned).collect()),
            },
            deadline_ms: None,
        }
    }

    fn delivered(seq: u64, severity: &str) -> Delivered {
        let data = json!({"id": format!("A{seq}"), "severity": severity});
        Delivered {
            seq,
            kind: "accidents.new".into(),
            body:
                json!({"type": "accidents.new", "channel": "accidents", "seq": seq, "data": data})
                    .to_string(),
            merged: data.to_string(),
        }
    }

    #[test]
    fn a_new_subscription_gets_subscribed_then_the_filtered_snapshot() {
        let ch = Channel::parse("accidents", &Config::default()).unwrap();
        let f = Filters::parse(&ch, Some(&json!({"severity": ["severe"]}))).unwrap();
        let state = AttachResponse {
            head: 2,
            recovered: None,
            events: vec![delivered(1, "minor"), delivered(2, "severe")],
            catch_up: vec![],
        };
        let frames = subscription_frames("accidents", &f, &state, "t");
        assert_eq!(frames.len(), 2);
        let sub: Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(
            sub["data"],
            json!({"channel": "accidents", "filters": {"severity": ["severe"]}, "seq": 2})
        );
        let snap: Value = serde_json::from_str(&frames[1]).unwrap();
        assert_eq!(snap["data"]["events"].as_array().unwrap().len(), 1);
        assert_eq!(snap["data"]["events"][0]["seq"], 2);
    }

    #[test]
    fn a_recovered_subscription_gets_the_replayed_events_as_frames() {
        let state = AttachResponse {
            head: 2,
            recovered: Some(true),
            events: vec![delivered(1, "minor"), delivered(2, "severe")],
            catch_up: vec![],
        };
        let frames = subscription_frames("accidents", &Filters::default(), &state, "t");
        assert_eq!(frames.len(), 3);
        assert!(frames[0].contains(r#""recovered":true"#));
        assert_eq!(frames[1], state.events[0].body);
    }

    #[test]
    fn the_first_subscriber_registers_and_the_last_unregisters() {
        let mut s = Subscriptions::default();
        assert!(s.insert("a", "alerts", Filters::default()));
        assert!(!s.insert("b", "alerts", Filters::default()));
        assert!(!s.remove("a", "alerts"));
        assert!(s.remove("b", "alerts"));
        assert!(s.subscribers("alerts").is_empty());
    }

    #[test]
    fn subscribing_again_replaces_filters_without_a_second_entry() {
        let mut s = Subscriptions::default();
        let ch = Channel::parse("accidents", &Config::default()).unwrap();
        s.insert("a", "accidents", Filters::default());
        let f = Filters::parse(&ch, Some(&json!({"severity": ["severe"]}))).unwrap();
        assert!(!s.insert("a", "accidents", f.clone()));
        assert_eq!(s.subscribers("accidents"), &[("a".to_owned(), f)]);
        assert_eq!(s.channels_of("a").len(), 1);
    }

    #[test]
    fn a_connection_has_exactly_the_channels_it_subscribed_and_kept() {
        let mut s = Subscriptions::default();
        s.insert("a", "alerts", Filters::default());
        s.insert("b", "weather", Filters::default());
        assert!(s.contains("a", "alerts"));
        assert!(!s.contains("a", "weather"), "b's channel is not a's");
        assert!(
            !s.remove("a", "weather"),
            "removing what a lacks changes nothing"
        );
        assert_eq!(s.subscribers("weather").len(), 1);
        s.remove("a", "alerts");
        assert!(!s.contains("a", "alerts"));
    }

    #[test]
    fn removing_a_connection_reports_the_channels_it_emptied() {
        let mut s = Subscriptions::default();
        s.insert("a", "alerts", Filters::default());
        s.insert("a", "weather", Filters::default());
        s.insert("b", "weather", Filters::default());
        assert_eq!(s.remove_conn("a"), vec!["alerts".to_owned()]);
        assert_eq!(s.connections(), 1);
        assert!(!s.remove("a", "weather"), "unsubscribing twice is harmless");
    }

    #[test]
    fn the_eleventh_subscription_is_max_subscriptions_but_a_repeat_is_not() {
        let cfg = Config::default();
        let mut s = Subscriptions::default();
        let id = identity(Some(vec!["conversation:*"]));
        for i in 0..10 {
            let ch = format!("conversation:c{i}");
            let (c, f) = check_subscribe(&id, &s, "a", &ch, None, &cfg).unwrap();
            s.insert("a", c.name(), f);
        }
        let e = check_subscribe(&id, &s, "a", "conversation:c10", None, &cfg).unwrap_err();
        assert_eq!(e.code, ErrorCode::MaxSubscriptions);
        assert!(check_subscribe(&id, &s, "a", "conversation:c3", None, &cfg).is_ok());
    }

    #[test]
    fn subscribe_checks_channel_claim_and_filters_in_that_order() {
        let cfg = Config::default();
        let s = Subscriptions::default();
        let id = identity(Some(vec!["traffic.*"]));
        assert_eq!(
            check_subscribe(&id, &s, "a", "nope", None, &cfg)
                .unwrap_err()
                .code,
            ErrorCode::ChannelNotFound
        );
        assert_eq!(
            check_subscribe(&id, &s, "a", "alerts", None, &cfg)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        let bad = json!({"colour": ["red"]});
        assert_eq!(
            check_subscribe(&id, &s, "a", "traffic.flow", Some(&bad), &cfg)
                .unwrap_err()
                .code,
            ErrorCode::InvalidMessage
        );
    }
}
