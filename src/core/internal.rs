//! What the gateway's own parts say to each other: the Worker → object and
//! room ↔ hub routes, the headers that carry verified facts, and the typed
//! bodies of every internal call. Nothing here is seen by clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::filter::Filters;
use super::metrics::Counters;
use super::protocol::{Member, PresenceChange, Who};
use super::status::SystemStatus;

/// Header carrying claims the Worker already verified to a Durable Object.
pub const CLAIMS_HEADER: &str = "x-uip-claims";
/// Header carrying the channel name to its room.
pub const CHANNEL_HEADER: &str = "x-uip-channel";
/// Header naming a hub to itself, so it can register with rooms.
pub const HUB_HEADER: &str = "x-uip-hub";
/// Header on a hub's answer to an upgrade: the sockets it now holds, which
/// the Worker's `core::placement` places the next sockets by.
pub const HUB_SOCKETS_HEADER: &str = "x-uip-hub-sockets";
/// Binding of the ChannelRoom namespace.
pub const ROOM_BINDING: &str = "CHANNEL_ROOM";
/// Binding of the Hub namespace.
pub const HUB_BINDING: &str = "HUB";
/// Binding of the Directory namespace.
pub const DIRECTORY_BINDING: &str = "DIRECTORY";
/// The one Directory object's name.
pub const DIRECTORY_NAME: &str = "directory";

/// The name of hub shard `i`.
pub fn hub_name(i: u32) -> String {
    format!("hub-{i}")
}

/// The paths a ChannelRoom answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRoute {
    Health,
    Socket,
    Publish,
    Snapshot,
    History,
    Stats,
    /// Hub → room: register and get a new subscriber's starting state.
    Attach,
    /// Hub → room: the hub's last subscriber left.
    Detach,
    /// Hub → room: events the hub missed, for gap repair.
    Replay,
    /// The channel's members over the room's sockets and every hub.
    Presence,
    /// Hub → room: a hub socket joined or left; tell every other subscriber.
    PresenceChange,
    /// Worker → room: announce a system status to the direct sockets.
    System,
}

/// The paths a Hub answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubRoute {
    Socket,
    /// Room → hub: new events of a channel.
    Deliver,
    Stats,
    /// Room → hub: this hub's members of a channel.
    Members,
    /// Room → hub: a presence frame for a channel's subscribers.
    PresenceFrame,
    /// Worker → hub: announce a system status to every socket.
    System,
}

/// The paths the Directory answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryRoute {
    /// The current system status.
    Status,
    /// Store a new system status.
    SetStatus,
    /// Room → directory: it holds sockets; answers the current status.
    Register,
    /// Room → directory: its last socket left.
    Unregister,
    /// The rooms that hold sockets.
    Rooms,
}

impl RoomRoute {
    const ALL: [RoomRoute; 12] = [
        RoomRoute::Health,
        RoomRoute::Socket,
        RoomRoute::Publish,
        RoomRoute::Snapshot,
        RoomRoute::History,
        RoomRoute::Stats,
        RoomRoute::Attach,
        RoomRoute::Detach,
        RoomRoute::Replay,
        RoomRoute::Presence,
        RoomRoute::PresenceChange,
        RoomRoute::System,
    ];

    /// The path of this route.
    pub fn path(self) -> &'static str {
        match self {
            RoomRoute::Health => "/health",
            RoomRoute::Socket => "/ws",
            RoomRoute::Publish => "/publish",
            RoomRoute::Snapshot => "/snapshot",
            RoomRoute::History => "/history",
            RoomRoute::Stats => "/stats",
            RoomRoute::Attach => "/attach",
            RoomRoute::Detach => "/detach",
            RoomRoute::Replay => "/replay",
            RoomRoute::Presence => "/presence",
            RoomRoute::PresenceChange => "/presence/change",
            RoomRoute::System => "/system",
        }
    }

    /// The route a request path names.
    pub fn parse(path: &str) -> Option<RoomRoute> {
        Self::ALL.into_iter().find(|r| r.path() == path)
    }

    /// A URL for this route (only its path and query are read).
    pub fn url(self) -> String {
        format!("https://room{}", self.path())
    }
}

impl HubRoute {
    const ALL: [HubRoute; 6] = [
        HubRoute::Socket,
        HubRoute::Deliver,
        HubRoute::Stats,
        HubRoute::Members,
        HubRoute::PresenceFrame,
        HubRoute::System,
    ];

    /// The path of this route.
    pub fn path(self) -> &'static str {
        match self {
            HubRoute::Socket => "/ws",
            HubRoute::Deliver => "/deliver",
            HubRoute::Stats => "/stats",
            HubRoute::Members => "/members",
            HubRoute::PresenceFrame => "/presence/frame",
            HubRoute::System => "/system",
        }
    }

    /// The route a request path names.
    pub fn parse(path: &str) -> Option<HubRoute> {
        Self::ALL.into_iter().find(|r| r.path() == path)
    }

    /// A URL for this route (only its path is read).
    pub fn url(self) -> String {
        format!("https://hub{}", self.path())
    }
}

impl DirectoryRoute {
    const ALL: [DirectoryRoute; 5] = [
        DirectoryRoute::Status,
        DirectoryRoute::SetStatus,
        DirectoryRoute::Register,
        DirectoryRoute::Unregister,
        DirectoryRoute::Rooms,
    ];

    /// The path of this route.
    pub fn path(self) -> &'static str {
        match self {
            DirectoryRoute::Status => "/status",
            DirectoryRoute::SetStatus => "/status/set",
            DirectoryRoute::Register => "/register",
            DirectoryRoute::Unregister => "/unregister",
            DirectoryRoute::Rooms => "/rooms",
        }
    }

    /// The route a request path names.
    pub fn parse(path: &str) -> Option<DirectoryRoute> {
        Self::ALL.into_iter().find(|r| r.path() == path)
    }

    /// A URL for this route (only its path is read).
    pub fn url(self) -> String {
        format!("https://directory{}", self.path())
    }
}

/// One stored event as a room hands it to a hub: the frame to send, and what
/// filters read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub body: String,
    pub merged: String,
}

impl Delivered {
    /// Whether a subscriber with `filters` gets this event.
    pub fn passes(&self, filters: &Filters) -> bool {
        filters.is_empty()
            || serde_json::from_str::<Value>(&self.merged)
                .is_ok_and(|m| filters.matches(&self.kind, &m))
    }
}

/// What a hub registers with a room for: plain deliveries, or deliveries that
/// also carry the topic's list for `001_…` dialect subscribers. On the wire
/// it is the boolean `dialect`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "bool", into = "bool")]
pub enum Registration {
    #[default]
    Plain,
    Dialect,
}

impl Registration {
    /// A room keeps the widest registration, so a dialect one covers both.
    pub fn covers(self, wanted: Registration) -> bool {
        self == Registration::Dialect || wanted == Registration::Plain
    }
}

impl From<bool> for Registration {
    fn from(dialect: bool) -> Self {
        if dialect {
            Registration::Dialect
        } else {
            Registration::Plain
        }
    }
}

impl From<Registration> for bool {
    fn from(r: Registration) -> Self {
        r == Registration::Dialect
    }
}

/// Hub → room: register this hub and send what a new subscriber needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachRequest {
    pub hub: String,
    #[serde(default)]
    pub since: Option<u64>,
    /// Whether deliveries must carry the topic's list (the subscriber speaks
    /// the `001_…` dialect).
    #[serde(default, rename = "dialect")]
    pub registration: Registration,
    /// The last `seq` the hub applied for this channel, when it is already
    /// receiving it: the answer then carries what it has not applied yet.
    #[serde(default)]
    pub applied: Option<u64>,
}

/// Room → hub: the head at attach time, and either the replay after `since`
/// (`recovered: Some(true)`) or the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachResponse {
    pub head: u64,
    pub recovered: Option<bool>,
    pub events: Vec<Delivered>,
    /// The retained events after the request's `applied` up to `head`, which
    /// the hub's existing subscribers get before the new one joins.
    #[serde(default)]
    pub catch_up: Vec<Delivered>,
}

/// Hub → room: the hub's last subscriber of a channel left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetachRequest {
    pub hub: String,
}

/// Room → hub: new events of one channel, in `seq` order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverRequest {
    pub channel: String,
    pub events: Vec<Delivered>,
    /// The room's head when it sent this: a hub that applied less than this
    /// after the events has a gap to fill.
    #[serde(default)]
    pub head: u64,
    /// The topic's list after these events, for `001_…` dialect subscribers.
    #[serde(default)]
    pub list: Option<String>,
}

/// Hub → room: sockets sent to per event, and whether the hub still has
/// subscribers for the channel (if not, the room forgets it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverResponse {
    pub delivered: Vec<u64>,
    pub registered: bool,
}

/// Hub → room: the retained events after `after`, up to `through`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayRequest {
    pub after: u64,
    pub through: u64,
    /// Also answer the topic's current list.
    #[serde(default)]
    pub dialect: bool,
}

/// Room → hub: the events asked for (some may be gone from history) and, if
/// asked, the topic's current list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayResponse {
    pub events: Vec<Delivered>,
    #[serde(default)]
    pub list: Option<String>,
}

/// Hub → Worker: sockets and subscribers per channel, and the counters of
/// the hub's isolate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubStats {
    pub connections: u64,
    pub channels: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub counters: Counters,
}

/// Room → Worker: direct sockets, the head, and the counters of the room's
/// isolate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomStats {
    pub direct: u64,
    pub seq: u64,
    /// Events sent to sockets, since the channel began.
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub counters: Counters,
}

/// Hub → room: a socket of the hub joined or left a presence channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceChangeRequest {
    pub change: PresenceChange,
    pub who: Who,
}

/// Room → hub: send `frame` to the channel's subscribers but `except`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceFrameRequest {
    pub channel: String,
    pub frame: String,
    pub except: String,
}

/// Room → hub: which of the hub's live sockets subscribe to `channel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersRequest {
    pub channel: String,
}

/// Members, from a hub or a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersResponse {
    pub members: Vec<Member>,
}

/// Sockets a system status reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemResponse {
    pub delivered: u64,
}

/// Room → directory: register or unregister this room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomName {
    pub room: String,
}

/// Directory → room: the status its new sockets must learn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub status: SystemStatus,
}

/// The rooms that hold sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomsResponse {
    pub rooms: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_back_from_its_path() {
        for r in RoomRoute::ALL {
            assert_eq!(RoomRoute::parse(r.path()), Some(r));
        }
        for r in HubRoute::ALL {
            assert_eq!(HubRoute::parse(r.path()), Some(r));
        }
        for r in DirectoryRoute::ALL {
            assert_eq!(DirectoryRoute::parse(r.path()), Some(r));
        }
        assert_eq!(RoomRoute::parse("/nope"), None);
    }

    #[test]
    fn a_delivery_from_an_older_room_has_head_zero() {
        let d: DeliverRequest =
            serde_json::from_str(r#"{"channel":"alerts","events":[]}"#).unwrap();
        assert_eq!(d.head, 0);
        assert_eq!(d.list, None);
    }

    #[test]
    fn an_attach_carries_its_registration_as_the_boolean_dialect() {
        let request = AttachRequest {
            hub: "hub-0".into(),
            since: None,
            registration: Registration::Dialect,
            applied: None,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["dialect"], true);
        let back: AttachRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
        let plain: AttachRequest = serde_json::from_str(r#"{"hub":"hub-0"}"#).unwrap();
        assert_eq!(plain.registration, Registration::Plain);
    }
}
