"""Worker processes (DISTILLWATCH_WORKERS): the same answers as updating in the serve
process, across restarts and a worker's death, and nothing stored from a failed request."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time

import pytest

from serve.store import SQLiteAccountStore, StoredAccount, StoreError


def _batches(sim_accounts: dict, size: int = 40) -> list[list[dict]]:
    """Live-like traffic: every account's events interleaved in time, cut into batches."""
    events = sorted((e for evs in sim_accounts.values() for e in evs), key=lambda e: e["ts"])
    events = events[:600]
    return [events[i : i + size] for i in range(0, len(events), size)]


def _ingest_all(client, batches) -> list[dict]:
    out = []
    for b in batches:
        r = client.post("/v1/events", json={"events": b})
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


@pytest.fixture(scope="module")
def reference(tiny_model_dir, sim_accounts, tmp_path_factory):
    """Answers and fleets of the same traffic with updates in the serve process."""
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.settings import ServiceSettings

    db = tmp_path_factory.mktemp("ref") / "state.sqlite3"
    app = create_app(ServiceSettings(model=tiny_model_dir, db=db), load_in_background=False)
    with TestClient(app) as client:
        answers = _ingest_all(client, _batches(sim_accounts))
        fleets = client.get("/v1/fleets").json()
        accounts = {a: client.get(f"/v1/accounts/{a}").json() for a in list(sim_accounts)[:30]}
    return answers, fleets, accounts


def test_workers_answer_as_the_serve_process_does_and_survive_a_restart(
    make_client, sim_accounts, reference
):
    answers, fleets, accounts = reference
    batches = _batches(sim_accounts)
    half = len(batches) // 2
    with make_client(workers=2) as client:
        pool = client.app.state.service._pool
        assert pool is not None and len(pool) == 2
        got = _ingest_all(client, batches[:half])
    # the next service updates in its own process, from what the workers stored
    with make_client() as client:
        got += _ingest_all(client, batches[half:])
        assert client.get("/v1/fleets").json() == fleets
        for a, expected in accounts.items():
            assert client.get(f"/v1/accounts/{a}").json() == expected
    assert got == answers


def test_a_killed_worker_is_started_again_and_the_request_still_succeeds(
    make_client, sim_accounts, reference
):
    answers, _, _ = reference
    batches = _batches(sim_accounts)
    with make_client(workers=2) as client:
        pool = client.app.state.service._pool
        got = _ingest_all(client, batches[:3])
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        for _ in range(100):  # until the worker is gone for good
            if pool._workers[0].proc.exitcode is not None:
                break
            time.sleep(0.05)
        got += _ingest_all(client, batches[3:])
        assert pool.restarts == 1 and pool.pids[0] != victim
    assert got == answers  # its accounts' states were read back from the store


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_update_stores_nothing_and_others_carry_on(
    make_client, sim_accounts, tmp_path, workers
):
    ids = list(sim_accounts)[:3]
    first = {a: sim_accounts[a][:5] for a in ids}
    with make_client(workers=workers) as client:
        for a in ids:
            assert client.post("/v1/events", json={"events": first[a]}).status_code == 200
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    with db:  # one state no distillwatch can read
        db.execute("UPDATE accounts SET state = ? WHERE account_id = ?", (b"garbage", ids[0]))
    db.close()
    with make_client(workers=workers) as client:
        before = client.get(f"/v1/accounts/{ids[1]}").json()
        bad = [sim_accounts[ids[0]][5], sim_accounts[ids[1]][5]]  # one request, two accounts
        r = client.post("/v1/events", json={"events": bad})
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        assert client.get(f"/v1/accounts/{ids[1]}").json() == before  # nothing of it stored
        r = client.post("/v1/events", json={"events": [sim_accounts[ids[2]][5]]})
        assert r.status_code == 200 and r.json()["scores"][0]["n_events"] == 6


def test_a_readonly_store_reads_and_never_writes(tmp_path):
    path = tmp_path / "s.sqlite3"
    with pytest.raises(StoreError, match="no account store"):
        SQLiteAccountStore(path, readonly=True)
    store = SQLiteAccountStore(path)
    store.put_many([StoredAccount("a-1", b"x", "{}", 1, False, 1.0, ((0, b"r"),))])
    reader = SQLiteAccountStore(path, readonly=True)
    assert reader.get_many(["a-1"])["a-1"].n_events == 1
    assert reader.get_rings(["a-1"]) == {"a-1": [(0, b"r")]}
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.put_many([StoredAccount("a-2", b"x", "{}", 1, False, 1.0)])
    store.put_many([StoredAccount("a-1", b"y", "{}", 2, False, 2.0)])
    assert reader.get_many(["a-1"])["a-1"].n_events == 2  # sees every commit
    reader.close()
    store.close()


def test_worker_count_is_a_setting():
    from serve.settings import SettingsError, load_settings

    assert load_settings(workers=3).workers == 3
    with pytest.raises(SettingsError, match="workers"):
        load_settings(workers=-1)


def test_a_hung_worker_fails_its_request_and_is_replaced(make_client, sim_accounts):
    ids = list(sim_accounts)[:4]
    with make_client(workers=2) as client:
        pool = client.app.state.service._pool
        pool.job_timeout_s = 2.0
        owner = {a: pool.worker_of(a) for a in ids}
        hung = pool.pids[owner[ids[0]]]
        os.kill(hung, signal.SIGSTOP)
        try:
            r = client.post("/v1/events", json={"events": sim_accounts[ids[0]][:3]})
            assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        finally:
            with contextlib.suppress(ProcessLookupError):  # the pool killed it; make sure
                os.kill(hung, signal.SIGKILL)
        assert pool.restarts == 1 and hung not in pool.pids
        assert client.get(f"/v1/accounts/{ids[0]}").status_code == 404  # nothing stored
        r = client.post("/v1/events", json={"events": sim_accounts[ids[0]][:3]})
        assert r.status_code == 200 and r.json()["scores"][0]["n_events"] == 3
