//! A channel's durable state in its Durable Object's SQLite storage: the
//! sequence head, the retained events (history), event ids for idempotency, and
//! the snapshot (latest event per key).

use std::cell::Cell;

use serde::Deserialize;
use worker::{Result, SqlStorage, SqlStorageValue};

use crate::core::config::Config;
use crate::core::snapshot::SnapshotOp;
use crate::core::subscriptions::Delivered;

/// The SQLite tables of one ChannelRoom.
pub struct RoomStore {
    sql: SqlStorage,
    head: Cell<Option<u64>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, type TEXT NOT NULL,
  body TEXT NOT NULL, merged TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_received ON events(received_ms);
CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, received_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ids_received ON ids(received_ms);
CREATE TABLE IF NOT EXISTS hubs (name TEXT PRIMARY KEY, dialect INTEGER NOT NULL DEFAULT 0);
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
        })
    }

    /// The last assigned `seq` (0 before the first event).
    pub fn head(&self) -> Result<u64> {
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

    /// The `seq` of an event published with `id` and still remembered.
    pub fn seq_of_id(&self, id: &str) -> Result<Option<u64>> {
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

    /// The merged data last stored for a snapshot key.
    pub fn merged_of(&self, key: &str) -> Result<Option<String>> {
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

    /// Stores an accepted event under `seq` (which must be `head + 1`), its id,
    /// and its effect on the snapshot. All writes of one event land together.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        seq: u64,
        id: Option<&str>,
        kind: &str,
        body: &str,
        merged: &str,
        op: &SnapshotOp,
        received_ms: i64,
    ) -> Result<()> {
        let s = seq as i64;
        self.sql.exec(
            "INSERT INTO events (seq, received_ms, type, body, merged) VALUES (?, ?, ?, ?, ?)",
            vec![
                int(s),
                int(received_ms),
                text(kind),
                text(body),
                text(merged),
            ],
        )?;
        if let Some(id) = id {
            self.sql.exec(
                "INSERT OR REPLACE INTO ids (id, seq, received_ms) VALUES (?, ?, ?)",
                vec![text(id), int(s), int(received_ms)],
            )?;
        }
        match op {
            SnapshotOp::Skip => {}
            SnapshotOp::Upsert { key, expires_ms } => {
                self.sql.exec(
                    "INSERT OR REPLACE INTO snapshot (k, seq, type, body, merged, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    vec![
                        text(key),
                        int(s),
                        text(kind),
                        text(body),
                        text(merged),
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
        self.head.set(Some(seq));
        Ok(())
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

    /// The hubs registered for this channel, and whether any of them has
    /// `001_…` dialect subscribers (who need each event's topic list).
    pub fn hubs(&self) -> Result<(Vec<String>, bool)> {
        #[derive(Deserialize)]
        struct Row {
            name: String,
            dialect: i64,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT name, dialect FROM hubs ORDER BY name", None)?
            .to_array()?;
        let dialect = rows.iter().any(|r| r.dialect != 0);
        Ok((rows.into_iter().map(|r| r.name).collect(), dialect))
    }

    /// Registers a hub; once it asked for topic lists it keeps getting them
    /// until it unregisters.
    pub fn register_hub(&self, name: &str, dialect: bool) -> Result<()> {
        self.sql.exec(
            "INSERT INTO hubs (name, dialect) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET dialect = MAX(dialect, excluded.dialect)",
            vec![text(name), int(i64::from(dialect))],
        )?;
        Ok(())
    }

    /// Forgets a hub.
    pub fn unregister_hub(&self, name: &str) -> Result<()> {
        self.sql
            .exec("DELETE FROM hubs WHERE name = ?", vec![text(name)])?;
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
