//! Forwards a socket's command to `COMMAND_URL` and turns the backend's
//! answer into the socket's frame (`core::command` decides what it means).

use crate::telemetry::log_error;
use std::time::Duration;

use futures::future::{select, Either};
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{Delay, Env, Fetch, Headers, Method, Request, RequestInit};

use crate::core::auth::Claims;
use crate::core::command::{answer_frame, read_answer, CommandCall, Failure};
use crate::core::config::Config;
use crate::core::error::to_json;
use crate::glue::{self, now_rfc3339};

/// A command of one socket, as parsed.
pub struct Command {
    pub name: String,
    pub message: Value,
    pub id: Option<Value>,
}

/// Sends the command to the backend and answers the frame for the socket:
/// `<name>.result`, or `COMMAND_FAILED` when the backend is not configured,
/// unreachable, slower than `COMMAND_TIMEOUT_MS`, non-2xx or not JSON.
pub async fn run(
    env: &Env,
    config: &Config,
    connection_id: &str,
    claims: &Claims,
    command: &Command,
) -> String {
    let outcome = match &config.command_url {
        None => Err(Failure::NotConfigured),
        Some(url) => {
            let call = CommandCall {
                command: &command.name,
                message: &command.message,
                sub: claims.sub.as_deref(),
                connection_id,
                channels: claims.channels.as_deref(),
            };
            let secret = env
                .secret("COMMAND_SECRET")
                .map(|s| s.to_string())
                .or_else(|_| env.var("COMMAND_SECRET").map(|s| s.to_string()))
                .ok();
            let deadline = Delay::from(Duration::from_millis(u64::from(config.command_timeout_ms)));
            let call = Box::pin(post(url, secret.as_deref(), to_json(&call)));
            let raced = select(call, deadline).await;
            match raced {
                // A later answer is dropped with the call.
                Either::Left((answer, _)) => answer,
                Either::Right(_) => Err(Failure::Timeout),
            }
        }
    };
    answer_frame(&command.name, command.id.as_ref(), outcome, &now_rfc3339())
}

async fn post(url: &str, secret: Option<&str>, body: String) -> Result<Value, Failure> {
    let unreachable = |e: worker::Error| {
        log_error!("command backend call failed: {e}");
        Failure::Unreachable
    };
    let headers = Headers::new();
    headers
        .set("content-type", "application/json")
        .map_err(unreachable)?;
    if let Some(secret) = secret {
        headers
            .set("authorization", &format!("Bearer {secret}"))
            .map_err(unreachable)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(JsValue::from_str(&body)));
    let req = Request::new_with_init(url, &init).map_err(unreachable)?;
    let resp = Fetch::Request(req).send().await.map_err(unreachable)?;
    let (status, text) = glue::read_text(resp)
        .await
        .map_err(|_| Failure::InvalidResponse)?;
    read_answer(status, &text)
}
