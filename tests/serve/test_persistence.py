"""Accepted events are never lost: app restarts, model checks and a real ``kill -9``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import LiveServer


def _chunks(events: list, n: int) -> list[list]:
    size = -(-len(events) // n)
    return [events[i : i + size] for i in range(0, len(events), size)]


def test_state_survives_restart_and_incremental_equals_whole_stream(
    make_client, sim_accounts, long_accounts
):
    ids = long_accounts[:4]
    parts = {a: _chunks(sim_accounts[a], 3) for a in ids}
    with make_client() as client:
        for a in ids:
            assert client.post("/v1/events", json={"events": parts[a][0]}).status_code == 200
        before = {a: client.get(f"/v1/accounts/{a}").json() for a in ids}

    with make_client() as client:  # a new app instance on the same database
        for a in ids:
            assert client.get(f"/v1/accounts/{a}").json() == before[a]
        for a in ids:
            for part in parts[a][1:]:
                r = client.post("/v1/events", json={"events": part})
                assert r.status_code == 200
        for a in ids:
            incremental = client.get(f"/v1/accounts/{a}").json()
            whole = client.post("/v1/score", json={"account_id": a, "events": sim_accounts[a]})
            whole_score = whole.json()
            assert incremental["n_events"] == whole_score["n_events"] == len(sim_accounts[a])
            assert incremental["score"] == pytest.approx(whole_score["score"], abs=1e-4)
            assert incremental["flagged"] == whole_score["flagged"]
            assert incremental["first_flag_event"] == whole_score["first_flag_event"]


def test_states_written_with_their_ring_inside_move_it_out_and_score_on(
    make_client, sim_accounts, long_accounts, tmp_path
):
    """A store written before rings lived beside the states (ring inside the state blob)."""
    import sqlite3

    from model.scorer import AccountState

    a = long_accounts[0]
    first, rest = sim_accounts[a][:20], sim_accounts[a][20:]
    with make_client() as client:
        assert client.post("/v1/events", json={"events": first}).status_code == 200
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    (blob,) = db.execute("SELECT state FROM accounts WHERE account_id = ?", (a,)).fetchone()
    rows = db.execute("SELECT slot, embedding FROM account_ring WHERE account_id = ?", (a,))
    state = AccountState.from_bytes(blob, rows.fetchall())
    assert AccountState.ring_is_external(blob) and len(blob) < len(state.to_bytes()) / 4
    with db:  # what an older distillwatch left: the whole ring inside, no ring rows
        db.execute("UPDATE accounts SET state = ? WHERE account_id = ?", (state.to_bytes(), a))
        db.execute("DELETE FROM account_ring")
    db.close()

    with make_client() as client:  # reads the old state, writes it back with its ring beside
        assert client.post("/v1/events", json={"events": rest[:10]}).status_code == 200
    with make_client() as client:  # a fresh cache: the ring comes from the ring rows
        assert client.post("/v1/events", json={"events": rest[10:]}).status_code == 200
        incremental = client.get(f"/v1/accounts/{a}").json()
        whole = client.post("/v1/score", json={"account_id": a, "events": sim_accounts[a]})
    assert incremental["n_events"] == len(sim_accounts[a])
    assert incremental["score"] == pytest.approx(whole.json()["score"], abs=1e-4)


def test_one_request_interleaving_accounts_equals_per_account_streams(
    make_client, sim_accounts, long_accounts
):
    ids = long_accounts[:3]
    mixed = sorted((e for a in ids for e in sim_accounts[a]), key=lambda e: e["prompt"])
    with make_client() as client:
        r = client.post("/v1/events", json={"events": mixed})  # unsorted, interleaved
        assert r.status_code == 200
        for s in r.json()["scores"]:
            whole = client.post(
                "/v1/score",
                json={"account_id": s["account_id"], "events": sim_accounts[s["account_id"]]},
            ).json()
            assert s["score"] == pytest.approx(whole["score"], abs=1e-4)


def test_refuses_a_database_written_by_another_model(tiny_model_dir, tmp_path):
    import shutil

    from serve.metrics import ServiceMetrics
    from serve.service import ScoringService
    from serve.settings import ServiceSettings
    from serve.store import StoreError

    db = tmp_path / "s.sqlite3"
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    cfg = other / "config.json"
    cfg.write_text(cfg.read_text().replace('"version": "', '"version": "other-', 1))
    first = ScoringService(ServiceSettings(model=tiny_model_dir, db=db), ServiceMetrics())
    first.open()
    first.load_model(raise_errors=True)
    from model.events import parse_event

    first.ingest([parse_event({"account_id": "a", "ts": 0, "prompt": "p"})])
    first.close()
    second = ScoringService(ServiceSettings(model=other, db=db), ServiceMetrics())
    with pytest.raises(StoreError, match="use a new --db"):
        second.open()


@pytest.fixture
def live_server(tiny_model_dir: Path, tmp_path: Path):
    servers: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        server = LiveServer(
            tiny_model_dir, tmp_path / "state.sqlite3", tmp_path / "server.log", env=env
        )
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for s in servers:
        s.stop()


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc; empty elsewhere)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in state  # a zombie has exited; only its parent's wait is missing


@pytest.mark.parametrize("workers", ["0", "2"])
def test_kill_9_loses_no_acknowledged_event(live_server, sim_accounts, tmp_path, workers):
    server = live_server(DISTILLWATCH_WORKERS=workers)
    children = _children(server.proc.pid)
    acked: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    n_threads = 4

    def client(k: int) -> None:
        ids = [a for i, a in enumerate(sim_accounts) if i % n_threads == k]
        sent = dict.fromkeys(ids, 0)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                a = ids[i % len(ids)]
                i += 1
                events = sim_accounts[a][sent[a] : sent[a] + 3]
                if not events:
                    continue
                try:
                    r = http.post("/v1/events", json={"events": events})
                except httpx.TransportError:
                    return  # the server died under us: this request was never acknowledged
                if r.status_code != 200:
                    errors.append(r.text)
                    return
                sent[a] += len(events)
                score = r.json()["scores"][0]
                with lock:
                    acked[a] = max(acked.get(a, 0), score["n_events"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum(acked.values()) < 300:
        time.sleep(0.05)
    server.kill9()  # mid-traffic: requests are in flight
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors
    assert sum(acked.values()) >= 30, "too little traffic before the kill to mean anything"
    if workers != "0" and Path("/proc").is_dir():  # orphaned workers see their pipe close
        assert len(children) >= int(workers)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(_gone(c) for c in children):
            time.sleep(0.1)
        assert all(_gone(c) for c in children), "worker processes outlived the killed server"

    restarted = live_server(DISTILLWATCH_WORKERS=workers)
    with httpx.Client(base_url=restarted.url, timeout=30) as http:
        lost = {}
        for a, n in acked.items():
            r = http.get(f"/v1/accounts/{a}")
            stored = r.json()["n_events"] if r.status_code == 200 else 0
            if stored < n:
                lost[a] = (n, stored)
        assert not lost, f"acknowledged events lost after kill -9: {lost}"
        # and the accounts carry on from where they were
        a = next(iter(acked))
        nxt = sim_accounts[a][acked[a] : acked[a] + 1] or sim_accounts[a][-1:]
        r = http.post("/v1/events", json={"events": nxt})
        assert r.status_code == 200 and r.json()["scores"][0]["n_events"] >= acked[a] + 1


def test_chunked_body_over_limit_on_a_real_server(tiny_model_dir, tmp_path):
    server = LiveServer(
        tiny_model_dir,
        tmp_path / "s.sqlite3",
        tmp_path / "log",
        env={"DISTILLWATCH_MAX_BODY_BYTES": "4096"},
    )
    try:
        server.wait_ready()

        def body():
            yield b'{"events": [{"account_id": "a", "ts": 0, "prompt": "'
            for _ in range(20):
                yield b"z" * 1024
            yield b'"}]}'

        with httpx.Client(base_url=server.url, timeout=30) as http:
            try:
                r = http.post(
                    "/v1/events", content=body(), headers={"content-type": "application/json"}
                )
                assert r.status_code == 413
            except (httpx.WriteError, httpx.RemoteProtocolError):
                pass  # the server answered 413 and closed before the client finished sending
            assert http.get("/v1/accounts/a").status_code == 404
    finally:
        server.stop()
