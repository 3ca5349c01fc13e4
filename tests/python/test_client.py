"""The Python client against real ``wrangler dev``."""

from __future__ import annotations

import asyncio
import http.client
import os
import time
import unittest
from typing import Callable

from gateway import Gateway, publish, token
from uip_realtime import Backoff, Client, ConnectionState, UipError, backoff_delay

WAIT = 15.0


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}-{time.time_ns()}"


async def until(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def talker(**claims: object) -> str:
    return token(sub="py-client", scope="subscribe publish", channels=["*"], **claims)


class BackoffTest(unittest.TestCase):
    def test_delays_stay_within_full_jitter_bounds_and_the_cap(self) -> None:
        b = Backoff()
        for attempt in range(12):
            cap = min(b.maximum, b.initial * 2**attempt)
            self.assertEqual(backoff_delay(attempt, b, lambda: 0.0), 0.0)
            self.assertLessEqual(backoff_delay(attempt, b, lambda: 0.999), cap)
        self.assertLessEqual(backoff_delay(60, b, lambda: 0.999), b.maximum)


class ClientTest(unittest.IsolatedAsyncioTestCase):
    gw: Gateway

    @classmethod
    def setUpClass(cls) -> None:
        cls.gw = Gateway("client", JWT_LEEWAY_S="1")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.gw.stop()

    async def test_a_restart_mid_stream_loses_and_repeats_nothing(self) -> None:
        channel = unique("conversation:py-restart-")
        seen: list[int] = []
        states: list[ConnectionState] = []
        client = Client(self.gw.ws, lambda: talker(), backoff=Backoff(0.2, 1.0), on_state=states.append)
        snapshots: list[int] = []
        client.subscribe(
            channel, lambda e: seen.append(e["seq"]), on_snapshot=lambda _e, seq, _r: snapshots.append(seq)
        )
        runner = asyncio.ensure_future(client.run())
        # Publishing starts once the subscription stands: an event published
        # before it is (rightly) not part of a namespaced channel's first state.
        await until("subscribed", lambda: bool(snapshots))

        async def publish_all() -> None:
            for n in range(60):
                deadline = time.monotonic() + 120
                while True:
                    try:
                        answer = await asyncio.to_thread(
                            publish, self.gw, {"channel": channel, "type": "chat_message", "data": {"n": n}, "id": f"m-{n}"}
                        )
                        if answer.get("results"):
                            break
                    except (OSError, http.client.HTTPException):
                        # Down or restarting, or the answer cut off mid-body
                        # (IncompleteRead is no OSError): retry with the same id.
                        pass
                    self.assertLess(time.monotonic(), deadline, f"event {n} never acknowledged")
                    await asyncio.sleep(0.1)

        publisher = asyncio.ensure_future(publish_all())
        await until("20 events", lambda: len(seen) >= 20)
        await asyncio.to_thread(self.gw.restart)
        await publisher
        await until("all 60 events", lambda: len(seen) >= 60, 60)
        await client.close()
        await runner
        self.assertEqual(seen, list(range(1, 61)))
        self.assertIn(ConnectionState.RECONNECTING, states)

    async def test_an_expiring_token_is_refreshed_and_the_connection_survives(self) -> None:
        channel = unique("conversation:py-refresh-")
        calls = 0

        def provider() -> str:
            nonlocal calls
            calls += 1
            return talker(exp=int(time.time()) + 4)

        states: list[ConnectionState] = []
        seen: list[object] = []
        client = Client(self.gw.ws, provider, refresh_before=2.0, on_state=states.append)
        client.subscribe(channel, lambda e: seen.append(e["data"]))
        runner = asyncio.ensure_future(client.run())
        await until("open", lambda: client.state is ConnectionState.OPEN)
        await until("two refreshes", lambda: calls >= 3, 12)
        await asyncio.to_thread(publish, self.gw, {"channel": channel, "type": "chat_message", "data": {"n": 1}})
        await until("the event", lambda: len(seen) == 1)
        await client.close()
        await runner
        self.assertEqual(states, [ConnectionState.CONNECTING, ConnectionState.OPEN, ConnectionState.CLOSED])

    async def test_a_refused_channel_is_a_typed_error_while_others_keep_working(self) -> None:
        allowed = unique("conversation:py-ok-")
        refused: list[str] = []
        seen: list[int] = []
        client = Client(self.gw.ws, token(sub="narrow", scope="subscribe", channels=[allowed]))

        def note(e: UipError) -> None:
            refused.append(e.code)

        client.subscribe("conversation:elsewhere", on_error=note)
        client.subscribe("nowhere", on_error=note)
        client.subscribe(allowed, lambda e: seen.append(e["seq"]))
        runner = asyncio.ensure_future(client.run())
        await until("both refusals", lambda: len(refused) == 2)
        await asyncio.to_thread(publish, self.gw, {"channel": allowed, "type": "chat_message", "data": {}})
        await until("the allowed channel", lambda: len(seen) == 1)
        await client.close()
        await runner
        self.assertEqual(sorted(refused), ["CHANNEL_NOT_FOUND", "FORBIDDEN"])

    async def test_a_token_without_subscribe_scope_is_final(self) -> None:
        errors: list[str] = []
        states: list[ConnectionState] = []
        client = Client(self.gw.ws, lambda: token(sub="p", scope="publish"), on_error=lambda e: errors.append(e.code),
                        on_state=states.append)
        await asyncio.wait_for(client.run(), WAIT)
        self.assertIn("FORBIDDEN", errors)
        self.assertNotIn(ConnectionState.RECONNECTING, states)


if __name__ == "__main__":
    unittest.main()
