"""Starts ``wrangler dev`` for the Python client's tests (the bundle the suite
built) and mints HS256 tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "python-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """A running ``wrangler dev``; ``restart()`` brings it back on its port with its state."""

    def __init__(self, name: str, **variables: str) -> None:
        self.port = free_port()
        self.state = ROOT / "tests/.state" / f"python-{name}-{os.getpid()}"
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        self.variables = variables
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            "bash", str(ROOT / "tests/common/run-wrangler.sh"), str(os.getpid()),
            "--ip", "127.0.0.1", "--port", str(self.port), "--inspector-port", str(free_port()),
            "--persist-to", str(self.state), "--var", f"JWT_SECRET:{SECRET}",
            "--show-interactive-dev-session=false", "--log-level", "warn",
        ]
        for k, v in self.variables.items():
            args += ["--var", f"{k}:{v}"]
        env = dict(os.environ, UIP_SKIP_BUILD="1", WRANGLER_SEND_METRICS="false", CLOUDFLARE_CF_FETCH_ENABLED="false")
        env["PATH"] = f"{ROOT}/.tools/bin:{ROOT}/node_modules/.bin:{env.get('PATH', '')}"
        with open(f"{self.state}.log", "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"wrangler dev did not come up; see {self.state}.log")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(**claims: object) -> str:
    """An HS256 token with these claims, valid for an hour unless ``exp`` is given."""
    body = {"exp": int(time.time()) + 3600, **claims}
    unsigned = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(body).encode())}"
    sig = hmac.new(SECRET.encode(), unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{_b64(sig)}"


def publish(gw: Gateway, event: dict[str, object]) -> dict[str, object]:
    """Publishes one event; raises unless the gateway answers 200."""
    req = urllib.request.Request(
        f"{gw.http}/v1/publish",
        data=json.dumps(event).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token(sub='producer', scope='publish')}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        answer: dict[str, object] = json.loads(r.read())
        return answer
