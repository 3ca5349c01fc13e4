//! The Directory Durable Object: one for the gateway. It owns the system
//! status (`POST /v1/system/status`) and the list of rooms that hold direct
//! sockets, so an announcement reaches every socket on every route.

use crate::telemetry::log_error;
use serde::Deserialize;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, SqlStorageValue,
    State,
};

use crate::core::error::{to_json, ApiError, ErrorCode};
use crate::core::internal::{DirectoryRoute, RegisterResponse, RoomName, RoomsResponse};
use crate::core::status::SystemStatus;
use crate::glue::{self, error_response, now_ms};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY);
";

#[durable_object]
pub struct Directory {
    sql: SqlStorage,
}

impl DurableObject for Directory {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(SCHEMA, None) {
            log_error!("cannot open directory storage: {e}");
        }
        Directory { sql }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some(route) = DirectoryRoute::parse(&req.path()) else {
            return error_response(&ApiError::new(
                ErrorCode::NotFound,
                "unknown directory path",
            ));
        };
        let failed = |e: worker::Error| {
            log_error!("directory storage failed: {e}");
            error_response(&ApiError::internal("the gateway directory failed"))
        };
        let answer = match route {
            DirectoryRoute::Status => self.status().map(|s| to_json(&s)),
            DirectoryRoute::SetStatus => match req.json::<SystemStatus>().await {
                Ok(status) => self.set_status(&status).and_then(|_| self.rooms()),
                Err(_) => return error_response(&ApiError::internal("malformed status")),
            },
            DirectoryRoute::Register => match req.json::<RoomName>().await {
                Ok(r) => self.register(&r.room),
                Err(_) => return error_response(&ApiError::internal("malformed register")),
            },
            DirectoryRoute::Unregister => match req.json::<RoomName>().await {
                Ok(r) => self
                    .sql
                    .exec(
                        "DELETE FROM rooms WHERE name = ?",
                        vec![SqlStorageValue::String(r.room)],
                    )
                    .map(|_| "{}".to_owned()),
                Err(_) => return error_response(&ApiError::internal("malformed unregister")),
            },
            DirectoryRoute::Rooms => self.rooms(),
        };
        match answer {
            Ok(body) => glue::json_response(body, 200),
            Err(e) => failed(e),
        }
    }
}

impl Directory {
    /// The stored status; online since now when none was ever set.
    fn status(&self) -> Result<SystemStatus> {
        #[derive(Deserialize)]
        struct Row {
            v: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT v FROM meta WHERE k = 'status'", None)?
            .to_array()?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| serde_json::from_str(&r.v).ok())
            .unwrap_or_else(|| SystemStatus::online_since(now_ms() / 1000)))
    }

    fn set_status(&self, status: &SystemStatus) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO meta (k, v) VALUES ('status', ?)",
            vec![SqlStorageValue::String(to_json(status))],
        )?;
        Ok(())
    }

    /// Registers a room and answers the status its new sockets must learn.
    fn register(&self, room: &str) -> Result<String> {
        self.sql.exec(
            "INSERT OR IGNORE INTO rooms (name) VALUES (?)",
            vec![SqlStorageValue::String(room.to_owned())],
        )?;
        Ok(to_json(&RegisterResponse {
            status: self.status()?,
        }))
    }

    fn rooms(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct Row {
            name: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT name FROM rooms ORDER BY name", None)?
            .to_array()?;
        Ok(to_json(&RoomsResponse {
            rooms: rows.into_iter().map(|r| r.name).collect(),
        }))
    }
}
