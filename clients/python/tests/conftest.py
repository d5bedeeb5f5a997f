"""Fixtures: the REAL invalidator server binary as a subprocess, and HTTP helpers.

The binary: ``$INVALIDATOR_BIN``, default ``<repo root>/target/debug/invalidator``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "invalidator"

# Loopback only, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_ALL_SERVERS: list["Server"] = []


def _die_with_parent() -> None:  # runs in the child before exec (Linux): SIGKILL when pytest dies
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def server_binary() -> Path:
    path = Path(os.environ.get("INVALIDATOR_BIN") or DEFAULT_BIN)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"invalidator server binary not found at {path} "
            "(build it with `cargo build`, or set INVALIDATOR_BIN)",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpResult:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    def __getitem__(self, k: str) -> Any:
        return self.body[k]

    def get(self, k: str, default: Any = None) -> Any:
        return self.body.get(k, default) if isinstance(self.body, dict) else default

    def __repr__(self) -> str:
        return f"HttpResult({self.status}, {self.body!r})"


class Server:
    """One server process on a fixed port and data dir; restartable."""

    def __init__(self, data_dir: str, port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.bin = server_binary()
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(data_dir) / "server.log"
        self.token: str | None = None
        _ALL_SERVERS.append(self)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir, *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), "NO_COLOR": "1"},
        )
        log.close()
        pidfile = os.environ.get("INVALIDATOR_TEST_PIDFILE")
        if pidfile:
            with open(pidfile, "a") as f:
                f.write(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log_tail()}", pytrace=False)
            try:
                with _OPENER.open(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"server did not answer /healthz within {timeout}s:\n{self.log_tail()}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- HTTP (standard library only) --

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> HttpResult:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        tok = token or self.token
        if tok:
            headers["authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(req, timeout=10) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return HttpResult(status, parsed)

    def post(self, path: str, body: Any) -> HttpResult:
        return self.request("POST", path, body)

    async def apost(self, path: str, body: Any) -> HttpResult:
        return await asyncio.to_thread(self.post, path, body)

    async def invalidate_keys(self, keys: list[str], **extra: Any) -> HttpResult:
        r = await self.apost("/invalidate/key", {"keys": keys, "triggered_by": "pytest", **extra})
        assert r.status == 200, r
        return r

    async def invalidate_pattern(self, pattern: str, pattern_type: str | None = None, **extra: Any) -> HttpResult:
        body: dict[str, Any] = {"pattern": pattern, "triggered_by": "pytest", **extra}
        if pattern_type:
            body["pattern_type"] = pattern_type
        r = await self.apost("/invalidate/pattern", body)
        assert r.status == 200, r
        return r


def _cleanup_all() -> None:
    for s in _ALL_SERVERS:
        s.kill()


@pytest.fixture(scope="session")
def server():
    """One server shared by the tests that do not restart it (each test uses its own keys)."""
    with tempfile.TemporaryDirectory(prefix="inv-py-") as d:
        s = Server(d)
        s.start()
        try:
            yield s
        finally:
            if s.proc is not None and s.proc.poll() is not None and s.proc.returncode not in (0, -9):
                print(s.log_tail())
            s.stop()
            s.kill()


@pytest.fixture
def fresh_server():
    """A server of this test's own (it may be killed and restarted)."""
    with tempfile.TemporaryDirectory(prefix="inv-py-") as d:
        s = Server(d)
        s.start()
        try:
            yield s
        finally:
            s.kill()


@pytest.fixture
def ns() -> str:
    """A key namespace unique to the test."""
    return f"t{uuid.uuid4().hex[:10]}"


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    _cleanup_all()
