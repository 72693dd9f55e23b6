"""Live fleets over real HTTP: linking, judging, caching, bounds, restarts, auth."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import API_KEY, auth

WRAPPER = (
    "You are a meticulous olympiad tutor. Work through the problem below step by step, "
    "justify every step and state the final answer at the end.\n"
    "Problem: {problem}\n"
    "Show all intermediate reasoning before you give the final answer."
)
OTHER_WRAPPER = (
    "[[harvest-job v2]] Think carefully and write out a complete chain of thought.\n"
    "Task: {problem}\n"
    "End with the line ANSWER: followed by the result only."
)
PROBLEMS = [
    "a train leaves the station at noon and travels west until it meets a second train",
    "how many ways can a committee be chosen from a club of friends and colleagues",
    "find every real root of the cubic polynomial and explain why no others exist",
    "a ladder slides down a wall; how fast does its foot move away from the wall",
    "prove that the square root of a prime number is irrational",
    "what is the probability that two random chords of a circle intersect",
    "a tank drains through two pipes at different rates; when is it half empty",
    "show that every tree with several vertices has at least two leaves",
    "compute the expected number of coin flips until two heads appear in a row",
    "which regular polygons can tile the plane without gaps or overlaps",
    "determine the area enclosed between a parabola and a straight line",
    "a bag holds red and blue marbles; find the chance of drawing a matching pair",
]
ORGANIC = {
    "org-cook": [
        "what's a good substitute for buttermilk in pancakes",
        "how long should I rest a steak after grilling it",
        "can you freeze homemade pesto with parmesan in it",
    ],
    "org-travel": [
        "is it worth getting a rail pass for two weeks in japan",
        "best way to get from the airport in lisbon to the old town",
        "do i need a visa for a layover in istanbul",
    ],
    "org-dev": [
        "why does my docker container exit immediately after starting",
        "difference between git rebase and git merge for feature branches",
        "how do i profile memory usage of a node service in production",
    ],
    "org-garden": [
        "when should tomato seedlings be moved outdoors in a cold spring",
        "my fiddle leaf fig is dropping leaves near the radiator",
        "which cover crops improve clay soil over winter",
    ],
}


def _hydra(
    prefix: str = "hydra",
    n_accounts: int = 5,
    per_account: int = 6,
    wrapper: str = WRAPPER,
    t0: float = 1_775_217_600,
    subnet: str = "203.0.113",
    user_agent: str = "python-httpx/0.27",
) -> list[dict]:
    """One operator's accounts: the same wrapper around different problems, shared infra."""
    events = []
    for i in range(n_accounts):
        for j in range(per_account):
            problem = PROBLEMS[(i * per_account + j) % len(PROBLEMS)]
            events.append(
                {
                    "account_id": f"{prefix}-{i}",
                    "ts": t0 + 60 * (j * n_accounts + i),
                    "prompt": wrapper.format(problem=problem),
                    "ip": f"{subnet}.{10 + i}",
                    "user_agent": user_agent,
                    "max_tokens": 4096,
                }
            )
    return events


def _organic() -> list[dict]:
    return [
        {
            "account_id": account,
            "ts": 1_775_217_600 + 3_600 * (k + 3 * j) + 17 * k,
            "prompt": prompt,
            "ip": f"198.51.{100 + k}.7",
            "user_agent": f"browser/{k}",
        }
        for k, (account, prompts) in enumerate(ORGANIC.items())
        for j, prompt in enumerate(prompts)
    ]


def _ingest(client: Any, events: list[dict], size: int = 7, **kw: Any) -> None:
    for start in range(0, len(events), size):
        r = client.post("/v1/events", json={"events": events[start : start + size]}, **kw)
        assert r.status_code == 200, r.text


def _accounts_of(fleets: list[dict]) -> list[set[str]]:
    return [set(f["accounts"]) for f in fleets]


def _window(db: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT account_id, ts FROM fleet_prompts ORDER BY seq").fetchall()


@pytest.fixture
def fresh_client(make_client):
    """``make_client`` whose fleets are recomputed whenever events arrived (no cache)."""

    def make(**overrides: Any) -> Any:
        return make_client(**{"fleet_cache_seconds": 0, **overrides})

    return make


def test_empty_service_answers_no_fleets(make_client):
    with make_client() as client:
        r = client.get("/v1/fleets")
        assert r.status_code == 200
        assert r.json() == {"fleets": []}


def test_a_wrapper_fleet_comes_back_as_one_fleet_and_organic_accounts_as_none(fresh_client):
    events = sorted(_hydra() + _organic(), key=lambda e: (e["ts"], e["account_id"]))
    with fresh_client() as client:
        _ingest(client, events)
        fleets = client.get("/v1/fleets").json()["fleets"]
        assert _accounts_of(fleets) == [{f"hydra-{i}" for i in range(5)}]
        (fleet,) = fleets
        assert fleet["fleet_id"] == "f-1"
        assert 0.0 <= fleet["score"] <= 1.0
        assert any("share 1 prompt wrapper" in reason for reason in fleet["reasons"])

        # unjudged (the tiny model has no fleet judge): the members' mean own score
        own = [client.get(f"/v1/accounts/hydra-{i}").json()["score"] for i in range(5)]
        assert fleet["score"] == pytest.approx(sum(own) / len(own), abs=1e-3)

        # each account reports its current fleet, in its score and in ingest answers
        assert client.get("/v1/accounts/hydra-3").json()["fleet_id"] == "f-1"
        assert client.get("/v1/accounts/org-dev").json()["fleet_id"] is None
        more = client.post("/v1/events", json={"events": _hydra(n_accounts=1, per_account=1)})
        assert more.json()["scores"][0]["fleet_id"] == "f-1"


def test_query_parameters_filter_and_are_validated(fresh_client):
    with fresh_client() as client:
        _ingest(
            client,
            _hydra("ops-a")
            + _hydra(
                "ops-b",
                n_accounts=3,
                wrapper=OTHER_WRAPPER,
                subnet="192.0.2",
                user_agent="aiohttp/3.9",
            ),
        )
        fleets = client.get("/v1/fleets").json()["fleets"]
        assert sorted(len(f["accounts"]) for f in fleets) == [3, 5]
        assert client.get("/v1/fleets", params={"limit": 1}).json()["fleets"] == fleets[:1]
        above = min(f["score"] for f in fleets) + 1e-3
        if above <= 1.0:
            kept = client.get("/v1/fleets", params={"min_score": above}).json()["fleets"]
            assert kept == [f for f in fleets if f["score"] >= above]
        for params, field in (
            ({"limit": 0}, "limit"),
            ({"limit": 10**9}, "limit"),
            ({"min_score": 1.5}, "min_score"),
            ({"min_score": "high"}, "min_score"),
            ({"min_scor": 0.5}, "min_scor"),
        ):
            r = client.get("/v1/fleets", params=params)
            assert r.status_code == 422, params
            assert r.json()["detail"][0]["field"] == field


def test_judged_fleets_are_scored_by_the_models_fleet_judge(fresh_client):
    from model.fleet import FLEET_FEATURES, FleetJudge
    from model.fleet_model import FleetModel

    n = len(FLEET_FEATURES)
    judge = FleetJudge.from_dict(
        {
            "kind": "FleetJudge",
            "params": {"C": 1.0, "class_weight": None, "max_iter": 100},
            "feature_names": list(FLEET_FEATURES),
            "mean": [0.0] * n,
            "scale": [1.0] * n,
            "coef": [0.0] * n,
            "intercept": -3.0,  # P(harvest) = sigmoid(-3) ~ 0.047 for every fleet
        }
    )
    with fresh_client() as client:
        fleet_model = FleetModel()
        fleet_model.judge_, fleet_model.incidents_ = judge, None
        client.app.state.service.detector.fleet_model = fleet_model  # type: ignore[attr-defined]
        _ingest(client, _hydra())
        (fleet,) = client.get("/v1/fleets").json()["fleets"]
        assert fleet["score"] == pytest.approx(0.0474, abs=1e-3)


def test_answers_are_cached_until_they_expire(make_client):
    with make_client(fleet_cache_seconds=3600) as client:
        _ingest(client, _hydra("first"))
        assert len(client.get("/v1/fleets").json()["fleets"]) == 1
        _ingest(
            client,
            _hydra("second", wrapper=OTHER_WRAPPER, subnet="192.0.2", user_agent="aiohttp/3.9"),
        )
        assert len(client.get("/v1/fleets").json()["fleets"]) == 1  # cached
    with make_client(fleet_cache_seconds=0) as client:  # same database, new process
        assert len(client.get("/v1/fleets").json()["fleets"]) == 2


def test_fleets_survive_a_restart(fresh_client):
    with fresh_client() as client:
        _ingest(client, _hydra() + _organic())
        before = client.get("/v1/fleets").json()
    assert _accounts_of(before["fleets"]) == [{f"hydra-{i}" for i in range(5)}]
    with fresh_client() as client:  # a new app on the same SQLite file
        assert client.get("/v1/fleets").json() == before
        assert client.get("/v1/accounts/hydra-0").json()["fleet_id"] == "f-1"


def test_ingest_does_not_wait_for_a_fleet_computation(fresh_client):
    with fresh_client() as client:
        _ingest(client, _hydra())
        service = client.app.state.service  # type: ignore[attr-defined]
        with service._fleets._compute_lock:  # a long computation in progress
            _ingest(client, _organic())
        assert len(client.get("/v1/fleets").json()["fleets"]) == 1


def test_the_fleet_window_is_bounded(fresh_client, tmp_path):
    db = tmp_path / "bounded.sqlite3"
    cap, per_account = 18, 4
    settings = {
        "db": db,
        "fleet_max_prompts_per_account": per_account,
        "fleet_max_prompts": cap,
    }
    members = {f"hydra-{i}" for i in range(5)}
    sent = 0
    with fresh_client(**settings) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        # small rounds are linked incrementally (the linker is rebuilt once half of it was
        # evicted from the window); the last round outgrows the window between two answers
        for round_, n in enumerate((3, 3, 3, 3, 6)):
            events = _hydra(per_account=n, t0=1_775_217_600 + 10_000 * round_)
            _ingest(client, events, size=10)
            sent += n
            window = _window(db)
            assert len(window) == min(cap, 5 * min(sent, per_account))
            counts: dict[str, int] = {}
            for account, _ in window:
                counts[account] = counts.get(account, 0) + 1
            assert max(counts.values()) <= per_account
            newest = max(e["ts"] for e in events)
            assert newest in {ts for _, ts in window}  # the oldest are evicted, never the newest
            fleets = client.get("/v1/fleets").json()["fleets"]
            assert len(fleets) == 1 and set(fleets[0]["accounts"]) <= members
            # the linker holds at most the window plus what was evicted since its rebuild
            assert service._fleets.snapshot.n_prompts <= 2 * cap + 5 * n
        # every account's stream is still complete: only the fleet window is bounded
        assert client.get("/v1/accounts/hydra-0").json()["n_events"] == sent


def test_fleets_need_an_api_key_like_every_v1_route(make_client):
    with make_client(api_keys=(API_KEY,)) as client:
        assert client.get("/v1/fleets").status_code == 401
        assert client.get("/v1/fleets", headers=auth("wrong-key-0123456789")).status_code == 401
        r = client.get("/v1/fleets", headers=auth())
        assert r.status_code == 200 and r.json() == {"fleets": []}


def test_a_failed_write_leaves_no_fleet_input(tmp_path):
    from serve.store import FleetAccount, FleetPrompt, FleetWrite, SQLiteAccountStore, StoredAccount

    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    prompt = FleetPrompt("a", 1.0, 7, b"\x00\x3c" * 8)
    write = FleetWrite([prompt], [FleetAccount("a", "10.0.0.0/24", None, 0.5, 0.1)], 4, 10)
    good = StoredAccount("a", b"s", '{"score": 0.5}', 1, False, 1.0)
    assert store.put_many([good], write) is not None
    bad = StoredAccount("b", b"x", None, 1, False, 1.0)  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.put_many([good, bad], write)
    assert [row[1] for row in store.fleet_prompts(0, 10)] == ["a"]
    assert store.fleet_accounts(["a", "b"]) == [("a", "10.0.0.0/24", None, 0.5, 0.1, 0)]


def test_a_batch_queued_after_a_rebuild_read_it_is_not_linked_twice(tmp_path):
    """An ingest thread may queue its committed batch only after a rebuild already read it
    from the window: the batch must not be linked a second time."""
    from types import SimpleNamespace

    import numpy as np

    from serve.fleets import FleetBatch, LiveFleets
    from serve.store import SQLiteAccountStore

    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    fleets = LiveFleets(max_prompts_per_account=8, max_prompts=100, cache_seconds=0)
    detector: Any = SimpleNamespace(fleet_model=None)
    rng = np.random.default_rng(0)

    def commit(account: str, n: int) -> Any:
        emb = rng.standard_normal((n, 16)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        batch = FleetBatch(
            [account] * n, emb.astype(np.float16), np.full(n, 42), np.arange(n, dtype=float),
            {account: None}, {account: None},
        )  # fmt: skip
        write = fleets.write(batch, {account: (0.5, 0.0, n)})
        return batch, write, store.put_many([], write)

    fleets.current(detector, store)  # start-up rebuild of the empty window
    fleets.committed(*commit("a", 3))
    late = commit("b", 4)  # committed, but its thread has not queued it yet...
    fleets._rebuild = True  # ...when a rebuild reads the window
    assert fleets.current(detector, store).n_prompts == 7
    fleets.committed(*late)
    fleets.committed(*commit("c", 2))
    snapshot = fleets.current(detector, store)
    assert snapshot.n_prompts == 9 == len(store.fleet_prompts(0, 100))
    assert [f["accounts"] for f in snapshot.fleets] == [["a", "b", "c"]]  # one shared wrapper


def test_live_fleets_link_through_every_prefix_a_window_prompt_came_from(tmp_path):
    """Accounts rotating through an operator's prefixes: each one's MAIN prefix differs from
    its neighbour's, but the prefixes their prompts came from chain them into one fleet, live
    and after a rebuild from the stored window."""
    from types import SimpleNamespace

    import numpy as np

    from serve.fleets import FleetBatch, LiveFleets
    from serve.store import SQLiteAccountStore

    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    detector: Any = SimpleNamespace(fleet_model=None)
    rng = np.random.default_rng(3)
    prefixes = [f"203.0.{i}.0/24" for i in range(4)]

    def batch(i: int) -> FleetBatch:
        account, n = f"op-{i}", 6
        emb = rng.standard_normal((n, 16)).astype(np.float32)  # unrelated contents
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        used = [prefixes[i]] * 4 + [prefixes[(i + 1) % 4]] * 2  # mainly its own, then the next
        return FleetBatch(
            [account] * n, emb.astype(np.float16), np.zeros(n, dtype=np.int64),
            np.arange(n, dtype=float), {account: prefixes[i]}, {account: f"agent/{i}"}, used,
        )  # fmt: skip

    live = LiveFleets(max_prompts_per_account=8, max_prompts=100, cache_seconds=0)
    live.current(detector, store)
    for i in range(4):
        b = batch(i)
        write = live.write(b, {b.account_ids[0]: (0.9, 0.9, 6)})
        live.committed(b, write, store.put_many([], write))
    assert [f["accounts"] for f in live.current(detector, store).fleets] == [
        ["op-0", "op-1", "op-2", "op-3"]
    ]
    rebuilt = LiveFleets(max_prompts_per_account=8, max_prompts=100, cache_seconds=0)
    assert [f["accounts"] for f in rebuilt.current(detector, store).fleets] == [
        ["op-0", "op-1", "op-2", "op-3"]
    ]


def test_only_prompts_that_look_like_harvesting_enter_the_fleet_window(fresh_client, tmp_path):
    """As in batch fleets, a prompt links accounts only if the per-prompt head gives it at
    least the minimum probability; every prompt is still scored."""
    from model.events import AccountEvents, parse_event

    events = _hydra(per_account=3) + _organic()
    for min_prob, name in ((0.0, "all"), (0.5, "some")):
        db = tmp_path / f"{name}.sqlite3"
        with fresh_client(db=db, fleet_min_prompt_prob=min_prob) as client:
            _ingest(client, events, size=len(events))
            detector = client.app.state.service.detector  # type: ignore[attr-defined]
        window = sorted(_window(db))
        if min_prob == 0.0:
            assert len(window) == len(events)
            continue
        expected = []
        by_account: dict[str, list] = {}
        for e in events:
            by_account.setdefault(e["account_id"], []).append(parse_event(e))
        for account_id, evs in by_account.items():
            acc = AccountEvents.from_events(evs)
            _, _, probs = detector.update_with_prompts(None, acc)
            assert probs is not None
            expected += [
                (account_id, float(t)) for t, p in zip(acc.ts, probs, strict=True) if p >= 0.5
            ]
        assert window == sorted(expected)
        assert 0 < len(window) < len(events)  # the tiny model keeps some prompts, not all
