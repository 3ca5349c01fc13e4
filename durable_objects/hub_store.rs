//! A hub's state, with one owner: its sockets' subscriptions (channels with
//! filters, and `001_…` dialect topics) in SQLite together with the in-memory
//! index read on every delivery, and the last `seq` applied per channel. Every
//! change goes through here, so the table and the index never disagree.
//!
//! The cursors a delivery moves are written lazily (`advance`, then
//! `save_cursors` from the alarm within `glue::LAZY_SAVE_MS`): a write per
//! delivery per hub was most of what the hub route cost beyond the room route
//! (BENCHMARKS.md). Memory is lost while sockets stay open only when the
//! object hibernates, after 10 s without events; the save runs before that.
//! When the process itself ends, its sockets end with it, and a stale cursor
//! only repeats events to subscribers that are gone.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use worker::{Result, SqlStorage, SqlStorageValue};

use crate::core::filter::Filters;
use crate::core::status::SystemStatus;
use crate::core::subscriptions::Subscriptions;
use crate::glue::SaveDue;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subs (conn TEXT NOT NULL, channel TEXT NOT NULL, filters TEXT NOT NULL,
  PRIMARY KEY (conn, channel));
CREATE TABLE IF NOT EXISTS topics (conn TEXT NOT NULL, channel TEXT NOT NULL, PRIMARY KEY (conn, channel));
CREATE TABLE IF NOT EXISTS cursors (channel TEXT PRIMARY KEY, applied INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS members (conn TEXT NOT NULL, channel TEXT NOT NULL, sub TEXT,
  joined_ms INTEGER NOT NULL, PRIMARY KEY (conn, channel));
";

/// A socket of this hub present on a channel.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberRow {
    pub conn: String,
    pub channel: String,
    pub sub: Option<String>,
    pub joined_ms: i64,
}

/// Which kind of subscription: a channel with filters, or a dialect topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    Channel,
    Topic,
}

impl SubKind {
    fn table(self) -> &'static str {
        match self {
            SubKind::Channel => "subs",
            SubKind::Topic => "topics",
        }
    }
}

fn text(v: &str) -> SqlStorageValue {
    SqlStorageValue::String(v.to_owned())
}

/// The loaded form of the tables.
#[derive(Default)]
struct Index {
    channels: Subscriptions,
    topics: Subscriptions,
    cursors: HashMap<String, u64>,
}

impl Index {
    fn of(&mut self, kind: SubKind) -> &mut Subscriptions {
        match kind {
            SubKind::Channel => &mut self.channels,
            SubKind::Topic => &mut self.topics,
        }
    }
}

/// The SQLite tables of one hub, and their index.
pub struct HubStore {
    sql: SqlStorage,
    /// Loaded on first use after a wake.
    index: RefCell<Option<Index>>,
    /// Channels whose cursor moved in memory since it was last written.
    unsaved: RefCell<HashSet<String>>,
    /// Bumped on every change of subscriptions, so callers can cache what
    /// they derive from them (the receiving sockets per channel).
    version: Cell<u64>,
    /// The hub's name once read or written: every accept and attach asks.
    name: RefCell<Option<String>>,
}

impl HubStore {
    /// Opens the tables, creating them on first use.
    pub fn open(sql: SqlStorage) -> Result<Self> {
        sql.exec(SCHEMA, None)?;
        Ok(HubStore {
            sql,
            index: RefCell::new(None),
            unsaved: RefCell::new(HashSet::new()),
            version: Cell::new(0),
            name: RefCell::new(None),
        })
    }

    /// Changes whenever any subscription changes.
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut slot = self.index.borrow_mut();
        let index = slot.get_or_insert_with(|| self.load());
        f(index)
    }

    fn load(&self) -> Index {
        #[derive(Deserialize)]
        struct Sub {
            conn: String,
            channel: String,
            #[serde(default)]
            filters: Option<String>,
        }
        #[derive(Deserialize)]
        struct Cursor {
            channel: String,
            applied: u64,
        }
        let mut index = Index::default();
        let subs: Vec<Sub> = self
            .sql
            .exec("SELECT conn, channel, filters FROM subs", None)
            .and_then(|c| c.to_array())
            .unwrap_or_default();
        for r in subs {
            let filters = r
                .filters
                .and_then(|f| serde_json::from_str(&f).ok())
                .unwrap_or_default();
            index.channels.insert(&r.conn, &r.channel, filters);
        }
        let topics: Vec<Sub> = self
            .sql
            .exec("SELECT conn, channel FROM topics", None)
            .and_then(|c| c.to_array())
            .unwrap_or_default();
        for r in topics {
            index.topics.insert(&r.conn, &r.channel, Filters::default());
        }
        let cursors: Vec<Cursor> = self
            .sql
            .exec("SELECT channel, applied FROM cursors", None)
            .and_then(|c| c.to_array())
            .unwrap_or_default();
        index.cursors = cursors
            .into_iter()
            .map(|c| (c.channel, c.applied))
            .collect();
        index
    }

    /// This hub's name, as the Worker addressed it.
    pub fn name(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Row {
            v: String,
        }
        if let Some(name) = self.name.borrow().as_ref() {
            return Some(name.clone());
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT v FROM meta WHERE k = 'name'", None)
            .and_then(|c| c.to_array())
            .ok()?;
        let name = rows.into_iter().next().map(|r| r.v)?;
        self.name.replace(Some(name.clone()));
        Some(name)
    }

    /// Remembers this hub's name (for registering with rooms after a wake).
    /// Written once: every socket the Worker sends carries it, and a write
    /// per accept was a commit per connection.
    pub fn set_name(&self, name: &str) -> Result<()> {
        if self.name().as_deref() == Some(name) {
            return Ok(());
        }
        self.sql.exec(
            "INSERT OR REPLACE INTO meta (k, v) VALUES ('name', ?)",
            vec![text(name)],
        )?;
        self.name.replace(Some(name.to_owned()));
        Ok(())
    }

    /// The last system status announced to this hub.
    pub fn status(&self) -> Option<SystemStatus> {
        #[derive(Deserialize)]
        struct Row {
            v: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT v FROM meta WHERE k = 'status'", None)
            .and_then(|c| c.to_array())
            .ok()?;
        rows.into_iter()
            .next()
            .and_then(|r| serde_json::from_str(&r.v).ok())
    }

    /// Stores an announced system status.
    pub fn set_status(&self, status: &SystemStatus) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO meta (k, v) VALUES ('status', ?)",
            vec![text(&crate::core::error::to_json(status))],
        )?;
        Ok(())
    }

    /// Records that a socket joined a presence channel; `false` when it had
    /// already (a repeat subscribe with new filters is no new join).
    pub fn join(&self, conn: &str, channel: &str, sub: Option<&str>, at_ms: i64) -> Result<bool> {
        let cursor = self.sql.exec(
            "INSERT OR IGNORE INTO members (conn, channel, sub, joined_ms) VALUES (?, ?, ?, ?)",
            vec![
                text(conn),
                text(channel),
                sub.map_or(SqlStorageValue::Null, text),
                SqlStorageValue::Integer(at_ms),
            ],
        )?;
        Ok(cursor.rows_written() > 0)
    }

    /// Removes a socket from a presence channel; `false` when it was not there.
    pub fn leave(&self, conn: &str, channel: &str) -> Result<bool> {
        let cursor = self.sql.exec(
            "DELETE FROM members WHERE conn = ? AND channel = ?",
            vec![text(conn), text(channel)],
        )?;
        Ok(cursor.rows_written() > 0)
    }

    /// Removes a socket from every presence channel; returns what it left.
    pub fn leave_all(&self, conn: &str) -> Result<Vec<MemberRow>> {
        let rows: Vec<MemberRow> = self
            .sql
            .exec(
                "SELECT conn, channel, sub, joined_ms FROM members WHERE conn = ?",
                vec![text(conn)],
            )?
            .to_array()?;
        if !rows.is_empty() {
            self.sql
                .exec("DELETE FROM members WHERE conn = ?", vec![text(conn)])?;
        }
        Ok(rows)
    }

    /// The sockets recorded as present on `channel`.
    pub fn members(&self, channel: &str) -> Result<Vec<MemberRow>> {
        self.sql
            .exec(
                "SELECT conn, channel, sub, joined_ms FROM members WHERE channel = ? ORDER BY joined_ms",
                vec![text(channel)],
            )?
            .to_array()
    }

    /// Runs a read of the channel index (for subscribe checks).
    pub fn read_channels<T>(&self, f: impl FnOnce(&Subscriptions) -> T) -> T {
        self.with(|i| f(&i.channels))
    }

    /// Adds or replaces a subscription, in the table and the index together.
    pub fn subscribe(
        &self,
        kind: SubKind,
        conn: &str,
        channel: &str,
        filters: Filters,
    ) -> Result<()> {
        let q = match kind {
            SubKind::Channel => {
                "INSERT OR REPLACE INTO subs (conn, channel, filters) VALUES (?, ?, ?)"
            }
            SubKind::Topic => "INSERT OR IGNORE INTO topics (conn, channel) VALUES (?, ?)",
        };
        let mut args = vec![text(conn), text(channel)];
        if kind == SubKind::Channel {
            args.push(text(&serde_json::to_string(&filters).unwrap_or_default()));
        }
        self.sql.exec(q, args)?;
        self.with(|i| i.of(kind).insert(conn, channel, filters));
        self.bump();
        Ok(())
    }

    /// Removes one subscription (a no-op when absent: the index and the
    /// table agree, so nothing is written).
    pub fn unsubscribe(&self, kind: SubKind, conn: &str, channel: &str) -> Result<()> {
        let had = self.with(|i| {
            let subs = i.of(kind);
            let had = subs.contains(conn, channel);
            subs.remove(conn, channel);
            had
        });
        if !had {
            return Ok(());
        }
        self.bump();
        self.sql.exec(
            &format!(
                "DELETE FROM {} WHERE conn = ? AND channel = ?",
                kind.table()
            ),
            vec![text(conn), text(channel)],
        )?;
        Ok(())
    }

    /// Removes every subscription of a connection; returns the channels it had.
    pub fn remove_conn(&self, conn: &str) -> Result<Vec<String>> {
        let mut channels = self.with(|i| {
            let mut had: Vec<String> = i.channels.channels_of(conn).to_vec();
            had.extend(i.topics.channels_of(conn).iter().cloned());
            i.channels.remove_conn(conn);
            i.topics.remove_conn(conn);
            had
        });
        if channels.is_empty() {
            // Nothing in the index, so nothing in the table either.
            return Ok(channels);
        }
        self.bump();
        channels.sort_unstable();
        channels.dedup();
        for q in [
            "DELETE FROM subs WHERE conn = ?",
            "DELETE FROM topics WHERE conn = ?",
        ] {
            self.sql.exec(q, vec![text(conn)])?;
        }
        Ok(channels)
    }

    /// Whether any socket here subscribes to `channel` (as a channel or topic).
    pub fn wants(&self, channel: &str) -> bool {
        self.with(|i| {
            !i.channels.subscribers(channel).is_empty() || !i.topics.subscribers(channel).is_empty()
        })
    }

    /// The channel subscribers of `channel`, with their filters.
    pub fn channel_subscribers(&self, channel: &str) -> Vec<(String, Filters)> {
        self.with(|i| i.channels.subscribers(channel).to_vec())
    }

    /// The connections with `channel` as a dialect topic.
    pub fn topic_subscribers(&self, channel: &str) -> Vec<String> {
        self.with(|i| {
            i.topics
                .subscribers(channel)
                .iter()
                .map(|(c, _)| c.clone())
                .collect()
        })
    }

    /// The channels a connection has as dialect topics.
    pub fn topics_of(&self, conn: &str) -> Vec<String> {
        self.with(|i| i.topics.channels_of(conn).to_vec())
    }

    /// Subscriptions per channel (channels and topics together).
    pub fn counts(&self) -> HashMap<String, usize> {
        self.with(|i| {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for (c, n) in i.channels.counts().chain(i.topics.counts()) {
                *counts.entry(c.to_owned()).or_default() += n;
            }
            counts
        })
    }

    /// The last `seq` of `channel` this hub applied, while it receives it.
    pub fn applied(&self, channel: &str) -> Option<u64> {
        self.with(|i| i.cursors.get(channel).copied())
    }

    /// Moves the cursor of `channel` to `seq` and writes it now (a
    /// subscription attaching).
    pub fn set_applied(&self, channel: &str, seq: u64) -> Result<()> {
        let before = self.with(|i| i.cursors.insert(channel.to_owned(), seq));
        let was_unsaved = self.unsaved.borrow_mut().remove(channel);
        if before == Some(seq) && !was_unsaved {
            // Already written: a burst of subscribers at one head writes once.
            return Ok(());
        }
        self.write_cursor(channel, seq)
    }

    /// Moves the cursor of `channel` to `seq` in memory only (a delivery);
    /// `save_cursors` writes it.
    pub fn advance(&self, channel: &str, seq: u64) -> SaveDue {
        self.with(|i| i.cursors.insert(channel.to_owned(), seq));
        let mut unsaved = self.unsaved.borrow_mut();
        let first = unsaved.is_empty();
        unsaved.insert(channel.to_owned());
        if first {
            SaveDue::Schedule
        } else {
            SaveDue::Scheduled
        }
    }

    /// Writes every cursor moved since the last save.
    pub fn save_cursors(&self) -> Result<()> {
        let channels: Vec<String> = self.unsaved.borrow_mut().drain().collect();
        for channel in channels {
            if let Some(seq) = self.applied(&channel) {
                self.write_cursor(&channel, seq)?;
            }
        }
        Ok(())
    }

    fn write_cursor(&self, channel: &str, seq: u64) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO cursors (channel, applied) VALUES (?, ?)",
            vec![text(channel), SqlStorageValue::Integer(seq as i64)],
        )?;
        Ok(())
    }

    /// Forgets the cursor of a channel this hub stopped receiving.
    pub fn clear_applied(&self, channel: &str) -> Result<()> {
        self.with(|i| i.cursors.remove(channel));
        self.unsaved.borrow_mut().remove(channel);
        self.sql
            .exec("DELETE FROM cursors WHERE channel = ?", vec![text(channel)])?;
        Ok(())
    }

    fn bump(&self) {
        self.version.set(self.version.get() + 1);
    }
}
