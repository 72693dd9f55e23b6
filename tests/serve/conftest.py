"""Fixtures of the service tests: apps on a real SQLite file, a live server subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="session")
def sim_accounts(sim_table) -> dict[str, list[dict[str, Any]]]:
    """Each simulated account's events as contract records (RFC 3339 ts), in time order."""
    return {acc.account_id: [e.to_record() for e in acc.events()] for acc in sim_table.accounts()}


@pytest.fixture(scope="session")
def long_accounts(sim_accounts) -> list[str]:
    """Accounts with at least 24 events, longest first."""
    ids = [a for a, evs in sim_accounts.items() if len(evs) >= 24]
    return sorted(ids, key=lambda a: -len(sim_accounts[a]))


@pytest.fixture
def make_client(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., Any]:
    """``make_client(**settings)``: a context manager giving a TestClient of a ready app."""
    from serve.app import create_app
    from serve.settings import ServiceSettings

    @contextmanager
    def make(*, background: bool = False, **overrides: Any) -> Iterator[TestClient]:
        kwargs: dict[str, Any] = {"model": tiny_model_dir, "db": tmp_path / "state.sqlite3"}
        kwargs.update(overrides)
        app = create_app(ServiceSettings(**kwargs), load_in_background=background)
        with TestClient(app, raise_server_exceptions=False) as client:
            if background:
                assert app.state.service.wait_loaded(120)
            yield client

    return make


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``distillwatch serve`` in a subprocess on a loopback port."""

    def __init__(self, model: Path, db: Path, log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "distillwatch.cli",
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(db),
        ]
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
            except httpx.TransportError:
                pass
            else:
                if r.status_code == 200:
                    return
                if r.json().get("status") == "failed":
                    raise RuntimeError("the server's model failed to load (see its log)")
            time.sleep(0.2)
        raise TimeoutError("server not ready")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if not self._log.closed:
            self._log.close()
