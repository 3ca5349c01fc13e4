//! A channel's durable state in its Durable Object's SQLite storage: the
//! sequence head, the retained events (history), event ids for idempotency, and
//! the snapshot (latest event per key).

use std::cell::{Cell, RefCell};

use serde::Deserialize;
use worker::{Result, SqlStorage, SqlStorageValue};

use crate::core::config::Config;
use crate::core::internal::{Delivered, Registration};
use crate::core::publish::{Appended, EventLog};
use crate::core::snapshot::SnapshotOp;
use crate::core::status::SystemStatus;
use crate::glue::SaveDue;

/// The SQLite tables of one ChannelRoom.
pub struct RoomStore {
    sql: SqlStorage,
    head: Cell<Option<u64>>,
    /// The hub registry, read on every publish; loaded once, kept in step
    /// with its table by the methods below.
    hubs: RefCell<Option<Vec<HubLink>>>,
    /// Deliveries counted but not written yet: the hubs' share of a publish
    /// arrives a turn after its events were stored, and a write of its own
    /// would cost a second commit per publish. They are written with the
    /// next publish, or by the alarm `add_delivered_later` asked for.
    unsaved_delivered: Cell<u64>,
    /// An alarm is due to write `unsaved_delivered`.
    delivered_save_due: Cell<bool>,
}

/// A hub registered for this channel.
#[derive(Debug, Clone, Deserialize)]
pub struct HubLink {
    pub name: String,
    /// Whether it has `001_…` dialect subscribers, who need each event's
    /// topic list.
    pub registration: Registration,
    /// A push to it failed: it is nudged by the alarm until one succeeds.
    pub lagging: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, type TEXT NOT NULL,
  body TEXT NOT NULL, merged TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_received ON events(received_ms);
CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, received_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ids_received ON ids(received_ms);
CREATE TABLE IF NOT EXISTS about (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hub_links (name TEXT PRIMARY KEY, dialect INTEGER NOT NULL DEFAULT 0,
  attached_ms INTEGER NOT NULL DEFAULT 0, lagging INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS snapshot (k TEXT PRIMARY KEY, seq INTEGER NOT NULL, type TEXT NOT NULL,
  body TEXT NOT NULL, merged TEXT NOT NULL, expires_ms INTEGER);
";

fn int(v: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(v)
}

/// A sequence number or count as a binding: JS numbers are exact only up to
/// 2^53 - 1, and no channel gets near it, so larger values mean "all".
fn seq(v: u64) -> SqlStorageValue {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    SqlStorageValue::Integer(v.min(MAX_SAFE) as i64)
}

fn text(v: &str) -> SqlStorageValue {
    SqlStorageValue::String(v.to_owned())
}

impl RoomStore {
    /// Opens the tables, creating them on first use.
    pub fn open(sql: SqlStorage) -> Result<Self> {
        sql.exec(SCHEMA, None)?;
        Ok(RoomStore {
            sql,
            head: Cell::new(None),
            hubs: RefCell::new(None),
            unsaved_delivered: Cell::new(0),
            delivered_save_due: Cell::new(false),
        })
    }

    /// The oldest retained `seq`, `None` when history is empty.
    pub fn oldest(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Row {
            seq: Option<u64>,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT MIN(seq) AS seq FROM events", None)?
            .to_array()?;
        Ok(rows.first().and_then(|r| r.seq))
    }

    /// Up to `limit` retained events after `since`, in `seq` order.
    pub fn after(&self, since: u64, limit: u64) -> Result<Vec<Delivered>> {
        self.sql
            .exec(
                "SELECT seq, type, body, merged FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                vec![seq(since), seq(limit)],
            )?
            .to_array()
    }

    /// The live snapshot in `seq` order; entries past their expiry are dropped.
    pub fn snapshot(&self, now_ms: i64) -> Result<Vec<Delivered>> {
        self.sql.exec(
            "DELETE FROM snapshot WHERE expires_ms IS NOT NULL AND expires_ms <= ?",
            vec![int(now_ms)],
        )?;
        self.sql
            .exec(
                "SELECT seq, type, body, merged FROM snapshot ORDER BY seq",
                None,
            )?
            .to_array()
    }

    /// The hubs registered for this channel.
    pub fn hubs(&self) -> Result<Vec<HubLink>> {
        if let Some(h) = self.hubs.borrow().as_ref() {
            return Ok(h.clone());
        }
        #[derive(Deserialize)]
        struct Row {
            name: String,
            dialect: i64,
            lagging: i64,
        }
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT name, dialect, lagging FROM hub_links ORDER BY name",
                None,
            )?
            .to_array()?;
        let links: Vec<HubLink> = rows
            .into_iter()
            .map(|r| HubLink {
                name: r.name,
                registration: Registration::from(r.dialect != 0),
                lagging: r.lagging != 0,
            })
            .collect();
        self.hubs.replace(Some(links.clone()));
        Ok(links)
    }

    /// Registers a hub at `now_ms` (the attach brings it up to date, so it
    /// is no longer lagging); once it asked for topic lists it keeps getting
    /// them until it unregisters.
    pub fn register_hub(&self, name: &str, registration: Registration, now_ms: i64) -> Result<()> {
        let dialect = i64::from(bool::from(registration));
        self.sql.exec(
            "INSERT INTO hub_links (name, dialect, attached_ms) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET dialect = MAX(dialect, excluded.dialect), attached_ms = excluded.attached_ms, lagging = 0",
            vec![text(name), int(dialect), int(now_ms)],
        )?;
        self.hubs.replace(None);
        Ok(())
    }

    /// Forgets a hub. With `attached_before`, only if it has not attached
    /// again since then: a "no subscribers" answer to a push that left before
    /// the hub's latest attach is stale.
    pub fn unregister_hub(&self, name: &str, attached_before: Option<i64>) -> Result<()> {
        match attached_before {
            Some(t) => self.sql.exec(
                "DELETE FROM hub_links WHERE name = ? AND attached_ms < ?",
                vec![text(name), int(t)],
            )?,
            None => self
                .sql
                .exec("DELETE FROM hub_links WHERE name = ?", vec![text(name)])?,
        };
        self.hubs.replace(None);
        Ok(())
    }

    /// The channel this room serves, once it was remembered.
    pub fn channel(&self) -> Result<Option<String>> {
        self.about("channel")
    }

    /// A value of the `about` table.
    fn about(&self, key: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct Row {
            v: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT v FROM about WHERE k = ?", vec![text(key)])?
            .to_array()?;
        Ok(rows.into_iter().next().map(|r| r.v))
    }

    fn set_about(&self, key: &str, value: &str) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO about (k, v) VALUES (?, ?)",
            vec![text(key), text(value)],
        )?;
        Ok(())
    }

    /// The last system status this room learned (announced, or answered
    /// when it registered with the directory).
    pub fn status(&self) -> Result<Option<SystemStatus>> {
        Ok(self
            .about("status")?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Stores the system status.
    pub fn set_status(&self, status: &SystemStatus) -> Result<()> {
        self.set_about("status", &crate::core::error::to_json(status))
    }

    /// Whether this room is registered with the directory.
    pub fn registered(&self) -> Result<bool> {
        Ok(self.about("registered")?.is_some())
    }

    /// Notes that this room registered with the directory.
    pub fn set_registered(&self) -> Result<()> {
        self.set_about("registered", "1")
    }

    /// Events sent to sockets since the channel began.
    pub fn delivered(&self) -> Result<u64> {
        let written: u64 = self
            .about("delivered")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(written + self.unsaved_delivered.get())
    }

    /// Adds to the delivered count now, with what was counted for later.
    pub fn add_delivered(&self, n: u64) -> Result<()> {
        let n = n + self.unsaved_delivered.replace(0);
        if n == 0 {
            return Ok(());
        }
        // One statement: this runs on every publish.
        self.sql.exec(
            "INSERT INTO about (k, v) VALUES ('delivered', ?) ON CONFLICT(k) DO UPDATE \
             SET v = CAST(CAST(v AS INTEGER) + CAST(excluded.v AS INTEGER) AS TEXT)",
            vec![text(&n.to_string())],
        )?;
        Ok(())
    }

    /// Adds to the delivered count in memory; `add_delivered` or
    /// `save_delivered` writes it.
    pub fn add_delivered_later(&self, n: u64) -> SaveDue {
        self.unsaved_delivered.set(self.unsaved_delivered.get() + n);
        if self.delivered_save_due.replace(true) {
            SaveDue::Scheduled
        } else {
            SaveDue::Schedule
        }
    }

    /// The alarm's part: writes the deliveries counted for later.
    pub fn save_delivered(&self) -> Result<()> {
        self.delivered_save_due.set(false);
        self.add_delivered(0)
    }

    /// Notes that this room left the directory.
    pub fn clear_registered(&self) -> Result<()> {
        self.sql
            .exec("DELETE FROM about WHERE k = 'registered'", None)?;
        Ok(())
    }

    /// Remembers the channel this room serves (for work an alarm does).
    pub fn set_channel(&self, name: &str) -> Result<()> {
        self.set_about("channel", name)
    }

    /// Marks whether the last push to a hub failed.
    pub fn set_lagging(&self, name: &str, lagging: bool) -> Result<()> {
        self.sql.exec(
            "UPDATE hub_links SET lagging = ? WHERE name = ?",
            vec![int(i64::from(lagging)), text(name)],
        )?;
        if let Some(links) = self.hubs.borrow_mut().as_mut() {
            for l in links.iter_mut().filter(|l| l.name == name) {
                l.lagging = lagging;
            }
        }
        Ok(())
    }

    /// Drops history beyond the configured count and age, and ids older than
    /// the idempotency window. Every delete walks an index from its low end.
    pub fn prune(&self, config: &Config, now_ms: i64) -> Result<()> {
        let head = self.head()? as i64;
        let keep_from = head - config.history_max_events as i64;
        let age_cutoff = now_ms - (config.history_max_age_s as i64) * 1000;
        self.sql
            .exec("DELETE FROM events WHERE seq <= ?", vec![int(keep_from)])?;
        self.sql.exec(
            "DELETE FROM events WHERE received_ms < ?",
            vec![int(age_cutoff)],
        )?;
        let id_cutoff = now_ms - (config.idempotency_window_s as i64) * 1000;
        self.sql.exec(
            "DELETE FROM ids WHERE received_ms < ? AND seq < (SELECT COALESCE(MIN(seq), 0) FROM events)",
            vec![int(id_cutoff)],
        )?;
        Ok(())
    }
}

impl EventLog for RoomStore {
    type Error = worker::Error;

    fn head(&self) -> Result<u64> {
        if let Some(h) = self.head.get() {
            return Ok(h);
        }
        #[derive(Deserialize)]
        struct Row {
            v: u64,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT v FROM meta WHERE k = 'head'", None)?
            .to_array()?;
        let h = rows.first().map_or(0, |r| r.v);
        self.head.set(Some(h));
        Ok(h)
    }

    fn seq_of_id(&self, id: &str) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Row {
            seq: u64,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT seq FROM ids WHERE id = ?", vec![text(id)])?
            .to_array()?;
        Ok(rows.first().map(|r| r.seq))
    }

    fn merged_of(&self, key: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct Row {
            merged: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT merged FROM snapshot WHERE k = ?", vec![text(key)])?
            .to_array()?;
        Ok(rows.into_iter().next().map(|r| r.merged))
    }

    fn append(&self, e: &Appended<'_>) -> Result<()> {
        let s = e.seq as i64;
        self.sql.exec(
            "INSERT INTO events (seq, received_ms, type, body, merged) VALUES (?, ?, ?, ?, ?)",
            vec![
                int(s),
                int(e.received_ms),
                text(e.kind),
                text(e.body),
                text(e.merged),
            ],
        )?;
        if let Some(id) = e.id {
            self.sql.exec(
                "INSERT OR REPLACE INTO ids (id, seq, received_ms) VALUES (?, ?, ?)",
                vec![text(id), int(s), int(e.received_ms)],
            )?;
        }
        match e.op {
            SnapshotOp::Skip => {}
            SnapshotOp::Upsert { key, expires_ms } => {
                self.sql.exec(
                    "INSERT OR REPLACE INTO snapshot (k, seq, type, body, merged, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    vec![
                        text(key),
                        int(s),
                        text(e.kind),
                        text(e.body),
                        text(e.merged),
                        expires_ms.map_or(SqlStorageValue::Null, int),
                    ],
                )?;
            }
            SnapshotOp::Remove { key } => {
                self.sql
                    .exec("DELETE FROM snapshot WHERE k = ?", vec![text(key)])?;
            }
        }
        self.sql.exec(
            "INSERT OR REPLACE INTO meta (k, v) VALUES ('head', ?)",
            vec![int(s)],
        )?;
        self.head.set(Some(e.seq));
        Ok(())
    }
}
