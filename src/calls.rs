//! Calls between the gateway's own parts: the Worker or any object asking a
//! room to publish, and typed requests to rooms, hubs and the directory.

use crate::telemetry::log_error;
use std::time::Duration;

use futures::future::{select, Either};
use worker::{Env, Stub};

use crate::core::error::{to_json, ApiError, ErrorCode};
use crate::core::internal::{
    DirectoryRoute, MembersResponse, RoomRoute, DIRECTORY_BINDING, DIRECTORY_NAME, ROOM_BINDING,
};
use crate::core::protocol::{Member, PublishEvent, PublishResult};
use crate::glue;

/// A publish the room has not answered by then is answered 503 `OVERLOADED`
/// (SPEC: every publish is answered within 10 s); a retry with the same ids
/// is safe either way.
const PUBLISH_DEADLINE: Duration = Duration::from_millis(9_000);

/// The room of a channel.
pub fn room(env: &Env, name: &str) -> worker::Result<Stub> {
    env.durable_object(ROOM_BINDING)?.get_by_name(name)
}

/// The one directory object.
pub fn directory(env: &Env) -> worker::Result<Stub> {
    env.durable_object(DIRECTORY_BINDING)?
        .get_by_name(DIRECTORY_NAME)
}

/// Publishes a batch of one channel's validated events through its room:
/// the one path of every publish, over HTTP or from a socket.
pub async fn publish(
    env: &Env,
    channel: &str,
    batch: &[&PublishEvent],
) -> Result<Vec<PublishResult>, ApiError> {
    let unreachable = |_| ApiError::overloaded(1).with("channel", channel);
    let req = glue::internal_request(
        &RoomRoute::Publish.url(),
        Some(channel),
        Some(to_json(batch)),
    )
    .map_err(unreachable)?;
    let stub = room(env, channel).map_err(unreachable)?;
    let call = async {
        let resp = stub.fetch_with_request(req).await?;
        glue::read_text(resp).await
    };
    let deadline = worker::Delay::from(PUBLISH_DEADLINE);
    let (status, text) = match select(Box::pin(call), deadline).await {
        Either::Left((answer, _)) => answer.map_err(unreachable)?,
        Either::Right(_) => return Err(ApiError::overloaded(1).with("channel", channel)),
    };
    if status != 200 {
        return Err(error_of(status, &text).with("channel", channel));
    }
    serde_json::from_str(&text).map_err(|e| ApiError::internal(format!("bad room answer: {e}")))
}

/// The error a room answered, read back from its body: its own code for the
/// codes a room gives (`OVERLOADED` keeps its `retry_after_s`), else
/// `INTERNAL_ERROR`.
fn error_of(status: u16, text: &str) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: ApiErrorIn,
    }
    #[derive(serde::Deserialize)]
    struct ApiErrorIn {
        message: String,
        #[serde(default)]
        details: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let parsed = serde_json::from_str::<Body>(text).ok();
    if status == 503 {
        let retry = parsed
            .as_ref()
            .and_then(|b| b.error.details.as_ref()?.get("retry_after_s")?.as_u64())
            .unwrap_or(1);
        return ApiError::overloaded(retry);
    }
    let message = parsed
        .map(|b| b.error.message)
        .unwrap_or_else(|| text.to_owned());
    ApiError::new(ErrorCode::InternalError, message)
}

/// A typed call to the directory; any failure is `INTERNAL_ERROR`.
pub async fn to_directory<T: serde::de::DeserializeOwned>(
    env: &Env,
    route: DirectoryRoute,
    body: Option<String>,
) -> Result<T, ApiError> {
    let failed = |e: worker::Error| {
        log_error!("directory call {} failed: {e}", route.path());
        ApiError::internal("the gateway directory cannot be reached; try again")
    };
    let req = glue::internal_request(&route.url(), None, body).map_err(failed)?;
    let resp = directory(env)
        .map_err(failed)?
        .fetch_with_request(req)
        .await
        .map_err(failed)?;
    let (status, text) = glue::read_text(resp).await.map_err(failed)?;
    if status != 200 {
        return Err(error_of(status, &text));
    }
    serde_json::from_str(&text).map_err(|_| ApiError::internal("malformed directory answer"))
}

/// The members of a presence channel, over its room's sockets and every hub.
pub async fn presence(env: &Env, channel: &str) -> Result<Vec<Member>, ApiError> {
    let failed = |e: worker::Error| {
        log_error!("presence of {channel} failed: {e}");
        ApiError::internal(format!(
            "the presence of '{channel}' could not be read; try again"
        ))
        .with("channel", channel)
    };
    let req =
        glue::internal_request(&RoomRoute::Presence.url(), Some(channel), None).map_err(failed)?;
    let resp = room(env, channel)
        .map_err(failed)?
        .fetch_with_request(req)
        .await
        .map_err(failed)?;
    let (status, text) = glue::read_text(resp).await.map_err(failed)?;
    if status != 200 {
        return Err(error_of(status, &text).with("channel", channel));
    }
    serde_json::from_str::<MembersResponse>(&text)
        .map(|m| m.members)
        .map_err(|_| ApiError::internal("malformed presence answer"))
}
