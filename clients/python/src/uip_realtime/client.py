"""The gateway client."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Awaitable, Callable, Union
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]
Event = dict[str, Any]

#: The exact ping the runtime answers without waking the server.
PING = '{"type":"ping"}'
#: Close codes after which reconnecting cannot help.
TERMINAL_CLOSES = {4003, 4004}
#: Codes that end one subscription (it is dropped, the others go on).
SUBSCRIPTION_REFUSALS = {"FORBIDDEN", "CHANNEL_NOT_FOUND", "SUBSCRIPTION_FAILED", "MAX_SUBSCRIPTIONS"}


class ConnectionState(str, Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class UipError(Exception):
    """A server error with its SPEC code (or the client's own ``INVALID_FRAME``, ``CONNECTION_LOST``)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass
class Backoff:
    """Full-jitter exponential backoff settings, in seconds."""

    initial: float = 0.5
    maximum: float = 20.0
    reset_after: float = 10.0


def backoff_delay(attempt: int, backoff: Backoff = Backoff(), rand: Callable[[], float] = random.random) -> float:
    """A random delay in [0, min(maximum, initial * 2**attempt))."""
    cap: float = min(backoff.maximum, backoff.initial * 2.0 ** max(0, attempt))
    return rand() * cap


@dataclass
class Subscription:
    """One channel the client keeps subscribed."""

    channel: str
    on_event: Callable[[Event], None] | None = None
    on_snapshot: Callable[[list[Event], int, str], None] | None = None
    on_error: Callable[[UipError], None] | None = None
    filters: dict[str, Any] | None = None
    last_seq: int | None = None
    held: list[Event] | None = field(default=None, repr=False)
    active: bool = True


class Client:
    """Connects to ``url`` (``ws://``, ``wss://``, ``http://`` or ``https://``; ``/ws`` is added)."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        batch: bool = False,
        ping_interval: float = 25.0,
        pong_timeout: float = 10.0,
        refresh_before: float = 60.0,
        backoff: Backoff | None = None,
        on_state: Callable[[ConnectionState], None] | None = None,
        on_error: Callable[[UipError], None] | None = None,
        on_system: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/").replace("http", "ws", 1) if url.startswith("http") else url.rstrip("/")
        self._token_source = token
        self.batch = batch
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.refresh_before = refresh_before
        self.backoff = backoff or Backoff()
        self.on_state = on_state
        self.on_error = on_error
        self.on_system = on_system
        self.state = ConnectionState.IDLE
        self._subs: dict[str, Subscription] = {}
        self._ws: ClientConnection | None = None
        self._stopped = False
        self._attempt = 0
        self._last_frame = 0.0
        self._token = ""

    # ---- public API ----

    def subscribe(
        self,
        channel: str,
        on_event: Callable[[Event], None] | None = None,
        *,
        filters: dict[str, Any] | None = None,
        since: int | None = None,
        on_snapshot: Callable[[list[Event], int, str], None] | None = None,
        on_error: Callable[[UipError], None] | None = None,
    ) -> Subscription:
        """Subscribes; resubscribed with ``since`` after every reconnect."""
        sub = Subscription(channel, on_event, on_snapshot, on_error, filters, since)
        self._subs[channel] = sub
        if self.state is ConnectionState.OPEN:
            asyncio.ensure_future(self._send_subscribe(sub))
        return sub

    async def unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        if sub:
            sub.active = False
            await self._send({"type": "unsubscribe", "channel": channel})

    async def run(self) -> None:
        """Connects and stays connected until :meth:`close`; returns once closed."""
        while not self._stopped:
            self._set_state(ConnectionState.CONNECTING if self._attempt == 0 else ConnectionState.RECONNECTING)
            opened = time.monotonic()
            code = await self._connect_once()
            if self._stopped:
                break
            if code in TERMINAL_CLOSES or (code == 4001 and isinstance(self._token_source, str)):
                self._error(UipError(
                    "FORBIDDEN" if code == 4003 else "CHANNEL_NOT_FOUND" if code == 4004 else "AUTH_FAILED",
                    f"the server refused the connection ({code})",
                ))
                self._stopped = True
                break
            if time.monotonic() - opened >= self.backoff.reset_after:
                self._attempt = 0
            self._set_state(ConnectionState.RECONNECTING)
            await asyncio.sleep(backoff_delay(self._attempt, self.backoff))
            self._attempt += 1
        self._set_state(ConnectionState.CLOSED)

    async def close(self) -> None:
        """Closes for good: no reconnect."""
        self._stopped = True
        if self._ws is not None:
            await self._ws.close()

    # ---- one connection ----

    async def _token_now(self) -> str:
        src = self._token_source
        if isinstance(src, str):
            return src
        value = src()
        if inspect.isawaitable(value):
            return await value
        return value

    async def _connect_once(self) -> int | None:
        """One connection, read until it ends; the close code (None: no connection)."""
        try:
            self._token = await self._token_now()
        except Exception as e:  # the provider is the application's code
            self._error(UipError("AUTH_FAILED", f"the token provider failed: {e}"))
            return None
        url = f"{self.url}/ws?token={quote(self._token)}" + ("&batch=1" if self.batch else "")
        try:
            ws = await connect(url, ping_interval=None, close_timeout=2)
        except (OSError, asyncio.TimeoutError, Exception) as e:
            self._error(UipError("CONNECTION_LOST", f"cannot connect: {e}"))
            return None
        self._ws = ws
        tasks: list[asyncio.Task[None]] = [asyncio.ensure_future(self._heartbeat(ws))]
        try:
            async for raw in ws:
                self._last_frame = time.monotonic()
                self._on_frame(raw, tasks)
        except ConnectionClosed:
            pass
        finally:
            for t in tasks:
                t.cancel()
            self._ws = None
        code = ws.close_code
        return code if code is not None else 1006

    async def _heartbeat(self, ws: ClientConnection) -> None:
        """Pings every ``ping_interval``; no frame within ``pong_timeout`` after a ping ends the connection."""
        while True:
            await asyncio.sleep(self.ping_interval)
            sent = time.monotonic()
            with contextlib.suppress(ConnectionClosed):
                await ws.send(PING)
            await asyncio.sleep(self.pong_timeout)
            if self._last_frame < sent:
                self._error(UipError("CONNECTION_LOST", "no pong from the server"))
                await ws.close(4998, "heartbeat timeout")
                return

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(json.dumps(message))

    async def _send_subscribe(self, sub: Subscription) -> None:
        m: dict[str, Any] = {"type": "subscribe", "channel": sub.channel}
        if sub.filters:
            m["filters"] = sub.filters
        if sub.last_seq is not None:
            m["since"] = sub.last_seq
        await self._send(m)

    async def _refresh_at(self, exp: float) -> None:
        await asyncio.sleep(max(0.0, exp - time.time() - self.refresh_before))
        try:
            self._token = await self._token_now()
        except Exception as e:
            self._error(UipError("AUTH_FAILED", f"the token provider failed: {e}"))
            return
        await self._send({"type": "auth", "token": self._token})

    # ---- frames ----

    def _on_frame(self, raw: str | bytes, tasks: list[asyncio.Task[None]]) -> None:
        try:
            m = json.loads(raw)
            if not isinstance(m, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self._error(UipError("INVALID_FRAME", f"a frame from the server is not a JSON object: {e}"))
            return
        kind = m.get("type")
        data = m.get("data") or {}
        if kind == "auth.success":
            first = self.state is not ConnectionState.OPEN
            self._set_state(ConnectionState.OPEN)
            exp = data.get("exp")
            if isinstance(exp, (int, float)):
                tasks.append(asyncio.ensure_future(self._refresh_at(float(exp))))
            if first:
                for each in list(self._subs.values()):
                    tasks.append(asyncio.ensure_future(self._send_subscribe(each)))
        elif kind in ("auth.failed", "error"):
            self._on_server_error(m, tasks)
        elif kind == "system":
            if self.on_system:
                self.on_system(data)
        elif kind == "subscribed":
            sub = self._subs.get(data.get("channel", ""))
            if sub and data.get("recovered") is False:
                sub.held, sub.last_seq = [], None
        elif kind == "snapshot":
            self._on_snapshot(data)
        elif kind == "batch":
            for event in m.get("events") or []:
                self._on_event(event, tasks)
        elif isinstance(m.get("seq"), int) and isinstance(m.get("channel"), str):
            self._on_event(m, tasks)

    def _on_server_error(self, m: dict[str, Any], tasks: list[asyncio.Task[None]]) -> None:
        err = m.get("error") or {}
        e = UipError(err.get("code", "INTERNAL_ERROR"), err.get("message", "error"), err.get("details"))
        sub = self._subs.get(e.details.get("channel", ""))
        if sub and e.code in SUBSCRIPTION_REFUSALS:
            self._subs.pop(sub.channel, None)
            sub.active = False
            if sub.on_error:
                sub.on_error(e)
        if e.code == "AUTH_EXPIRED":
            tasks.append(asyncio.ensure_future(self._refresh_at(0)))
        self._error(e)

    def _on_snapshot(self, data: dict[str, Any]) -> None:
        sub = self._subs.get(data.get("channel", ""))
        if not sub:
            return
        reason = "gap" if sub.held is not None else "subscribed"
        seq = int(data.get("seq", 0))
        if sub.on_snapshot:
            sub.on_snapshot(list(data.get("events") or []), seq, reason)
        held, sub.held, sub.last_seq = sub.held or [], None, seq
        for e in held:
            self._on_event(e, [])

    def _on_event(self, e: Event, tasks: list[asyncio.Task[None]]) -> None:
        sub = self._subs.get(e.get("channel", ""))
        if not sub or not sub.active:
            return
        if sub.held is not None:
            sub.held.append(e)
            return
        seq = int(e["seq"])
        if sub.last_seq is not None and seq <= sub.last_seq:
            return
        if sub.last_seq is not None and seq > sub.last_seq + 1 and not sub.filters:
            # Within one connection the gateway sends every event in order
            # (filtered subscriptions skip seqs by design); a gap in an
            # unfiltered one means events were lost: resubscribe from the last
            # one delivered.
            sub.held = None
            tasks.append(asyncio.ensure_future(self._send_subscribe(sub)))
            return
        sub.last_seq = seq
        if sub.on_event:
            sub.on_event(e)

    def _set_state(self, state: ConnectionState) -> None:
        if state is not self.state:
            self.state = state
            if self.on_state:
                self.on_state(state)

    def _error(self, e: UipError) -> None:
        if self.on_error:
            self.on_error(e)
