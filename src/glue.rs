//! Small pieces of I/O shared by the Worker and the Durable Objects: clock,
//! config, JSON responses, and the one socket send helper.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{Env, Headers, Response, Result, WebSocket, WebSocketPair};

use crate::core::config::Config;
use crate::core::error::{to_json, ApiError, CloseCode, ErrorFrame};
use crate::core::time::rfc3339_ms;

/// Milliseconds since the epoch, from the runtime's clock.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// The current time as an RFC 3339 timestamp.
pub fn now_rfc3339() -> String {
    rfc3339_ms(now_ms())
}

/// The gateway config from `wrangler.toml` `[vars]`.
pub fn config(env: &Env) -> Config {
    Config::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()))
}

/// The HS256 secret (`JWT_SECRET`, a secret or a var), empty when unset.
pub fn jwt_secret(env: &Env) -> Vec<u8> {
    env.secret("JWT_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("JWT_SECRET").map(|v| v.to_string()))
        .unwrap_or_default()
        .into_bytes()
}

/// A JSON response with `status`.
pub fn json_response(body: String, status: u16) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}

/// The HTTP form of an error: its status and `{"error": {...}}`.
pub fn error_response(err: &ApiError) -> Result<Response> {
    json_response(err.http_body(), err.http_status())
}

/// Serializes and answers 200.
pub fn ok_json<T: serde::Serialize>(value: &T) -> Result<Response> {
    json_response(to_json(value), 200)
}

#[wasm_bindgen]
extern "C" {
    /// The runtime's WebSocket, bound directly so a frame already held as a JS
    /// string is sent without another UTF-8 conversion per socket.
    #[wasm_bindgen(extends = js_sys::Object)]
    type RawSocket;

    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_js(this: &RawSocket, data: &JsValue) -> std::result::Result<(), JsValue>;
}

/// Sends one frame. A socket that is closing or broken fails alone: the error is
/// reported as `false` and never stops the caller's loop.
pub fn send(ws: &WebSocket, frame: &JsValue) -> bool {
    let raw: &RawSocket = AsRef::<web_sys::WebSocket>::as_ref(ws).unchecked_ref();
    raw.send_js(frame).is_ok()
}

/// Sends a frame built in Rust.
pub fn send_str(ws: &WebSocket, frame: &str) -> bool {
    send(ws, &JsValue::from_str(frame))
}

/// Sends an error frame and closes with `close`; both may fail on a dead socket.
pub fn refuse(ws: &WebSocket, err: &ApiError, kind: ErrorFrame, close: CloseCode) {
    send_str(ws, &err.frame(kind, &now_rfc3339()));
    let _ = ws.close(Some(close.code()), Some(close.reason()));
}

/// Refuses an upgrade in-band: a browser cannot read the HTTP status of a failed
/// upgrade, so the socket is accepted, told why, and closed.
pub fn refuse_upgrade(err: &ApiError, kind: ErrorFrame, close: CloseCode) -> Result<Response> {
    let pair = WebSocketPair::new()?;
    pair.server.accept()?;
    refuse(&pair.server, err, kind, close);
    Response::from_websocket(pair.client)
}
