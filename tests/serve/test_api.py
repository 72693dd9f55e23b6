"""The HTTP API over real HTTP semantics (TestClient) with a real SQLite file."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.serve.conftest import API_KEY, auth

SCORE_FIELDS = {
    "account_id",
    "score",
    "flagged",
    "n_events",
    "first_flag_event",
    "fleet_id",
    "reasons",
}


def _event(account_id: str = "a-1", **kw: Any) -> dict[str, Any]:
    rec = {"account_id": account_id, "ts": "2026-04-03T12:00:00Z", "prompt": "hello there"}
    rec.update(kw)
    return rec


def test_ingest_answers_contract_scores_and_account_is_readable(make_client, sim_accounts):
    ids = [a for a in sim_accounts if len(sim_accounts[a]) >= 5][:3]
    events = [e for a in ids for e in sim_accounts[a][:5]]
    with make_client() as client:
        r = client.post("/v1/events", json={"events": events})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["n_events"] == 15
        assert [s["account_id"] for s in body["scores"]] == ids
        for s in body["scores"]:
            assert set(s) == SCORE_FIELDS
            assert 0.0 <= s["score"] <= 1.0
            assert s["n_events"] == 5
        got = client.get(f"/v1/accounts/{ids[0]}")
        assert got.status_code == 200
        assert got.json() == body["scores"][0]


def test_unknown_account_is_404(make_client):
    with make_client() as client:
        r = client.get("/v1/accounts/nobody")
        assert r.status_code == 404
        assert r.json() == {"detail": "unknown account"}


def test_model_fleets_health_and_metrics(make_client):
    with make_client() as client:
        info = client.get("/v1/model").json()
        for key in ("version", "threshold", "training", "metrics", "embedder"):
            assert key in info
        assert 0.0 < info["threshold"] < 1.0
        assert client.get("/v1/fleets").json() == {"fleets": []}
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        client.post("/v1/events", json={"events": [_event()]})
        text = client.get("/metrics").text
        assert "distillwatch_request_duration_seconds_bucket" in text
        assert 'route="/v1/events"' in text
        assert "distillwatch_events_ingested_total 1.0" in text
        assert "distillwatch_model_info{" in text
        client.get("/v1/accounts/x-1")
        assert 'route="/v1/accounts/{account_id}"' in client.get("/metrics").text


def test_readyz_is_503_until_the_model_is_loaded(tiny_model_dir, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    import serve.service as service_mod
    from serve.app import create_app
    from serve.settings import ServiceSettings

    gate = threading.Event()
    real_load = service_mod.load_model

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        gate.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(service_mod, "load_model", slow_load)
    app = create_app(ServiceSettings(model=tiny_model_dir, db=tmp_path / "s.sqlite3"))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = client.post("/v1/events", json={"events": [_event()]})
        assert r.status_code == 503 and r.json() == {"detail": "the model is loading"}
        gate.set()
        assert app.state.service.wait_loaded(60)
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/events", json={"events": [_event()]}).status_code == 200


def test_auth_401_and_no_side_effect(make_client):
    with make_client(api_keys=f"other-key-abcdefghijkl,{API_KEY}") as client:
        ev = {"events": [_event("secret-1")]}
        for headers in (
            {},
            auth("wrong-key"),
            {"Authorization": API_KEY},
            {"Authorization": f"Basic {API_KEY}"},
        ):
            r = client.post("/v1/events", json=ev, headers=headers)
            assert r.status_code == 401, headers
            assert r.json() == {"detail": "missing or invalid API key"}
            assert r.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/accounts/secret-1").status_code == 401
        assert client.get("/v1/model").status_code == 401
        # nothing was stored, nothing counted
        assert client.get("/v1/accounts/secret-1", headers=auth()).status_code == 404
        assert "distillwatch_events_ingested_total 0.0" in client.get("/metrics").text
        # the right key works; ops routes need none
        assert client.post("/v1/events", json=ev, headers=auth()).status_code == 200
        assert client.get("/v1/accounts/secret-1", headers=auth()).status_code == 200
        assert client.get("/healthz").status_code == 200
        schema = client.get("/openapi.json").json()
        assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_api_keys_are_held_only_as_hashes(tiny_model_dir, tmp_path):
    from serve.settings import ServiceSettings, hash_key

    s = ServiceSettings(model=tiny_model_dir, db=tmp_path / "x.sqlite3", api_keys=API_KEY)
    assert s.api_keys == (hash_key(API_KEY),)
    assert API_KEY not in repr(s) and API_KEY not in s.model_dump_json()


def test_body_over_limit_is_413_by_length_and_by_stream(make_client):
    with make_client(max_body_bytes=4096) as client:
        big = {"events": [_event(prompt="x" * 5000)]}
        r = client.post("/v1/events", json=big)
        assert r.status_code == 413
        assert "DISTILLWATCH_MAX_BODY_BYTES" in r.json()["detail"]

        def chunks():  # no Content-Length: chunked transfer
            yield b'{"events": [{"account_id": "a", "ts": 0, "prompt": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        r = client.post(
            "/v1/events", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        assert client.get("/v1/accounts/a").status_code == 404


def test_too_many_events_is_413_with_a_clear_message(make_client):
    with make_client(max_events_per_request=3) as client:
        r = client.post("/v1/events", json={"events": [_event(ts=i) for i in range(4)]})
        assert r.status_code == 413
        assert "limit is 3" in r.json()["detail"]
        assert client.get("/v1/accounts/a-1").status_code == 404


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"account_id": "a", "ts": "2026-04-03T12:00:00Z"}, "events.0.prompt"),
        ({"account_id": "a", "ts": "yesterday", "prompt": "p"}, "events.0.ts"),
        ({"account_id": "a", "ts": "2026-04-03T12:00:00", "prompt": "p"}, "events.0.ts"),
        ({"account_id": "a", "ts": 1e15, "prompt": "p"}, "events.0.ts"),
        ({"account_id": "a" * 129, "ts": 0, "prompt": "p"}, "events.0.account_id"),
        ({"account_id": "", "ts": 0, "prompt": "p"}, "events.0.account_id"),
        ({"ts": 0, "prompt": "p"}, "events.0.account_id"),
        ({"account_id": "a", "ts": 0, "prompt": 3}, "events.0.prompt"),
        ({"account_id": "a", "ts": 0, "prompt": "p", "max_tokens": "9"}, "events.0.max_tokens"),
        ({"account_id": "a", "ts": 0, "prompt": "p", "max_tokens": -1}, "events.0.max_tokens"),
        ({"account_id": "a", "ts": 0, "prompt": "p", "ip": 12}, "events.0.ip"),
    ],
)
def test_bad_event_is_422_naming_the_field(make_client, event, field):
    with make_client() as client:
        good = _event("ok-1")
        r = client.post("/v1/events", json={"events": [event, good]})
        assert r.status_code == 422, r.text
        fields = [d["field"] for d in r.json()["detail"]]
        assert field in fields
        assert all("input" not in d for d in r.json()["detail"])
        # a bad request stores nothing, not even its good events
        assert client.get("/v1/accounts/ok-1").status_code == 404


def test_malformed_json_and_unknown_fields(make_client):
    with make_client() as client:
        r = client.post(
            "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        r = client.post("/v1/events", json={"events": [_event(extra_field={"x": 1})]})
        assert r.status_code == 200


def test_score_is_stateless_and_checks_the_account(make_client, sim_accounts, long_accounts):
    acc = long_accounts[-1]
    events = sim_accounts[acc][:10]
    with make_client() as client:
        stream = [{k: v for k, v in e.items() if k != "account_id"} for e in events]
        r = client.post("/v1/score", json={"account_id": acc, "events": stream})
        assert r.status_code == 200, r.text
        assert set(r.json()) == SCORE_FIELDS and r.json()["n_events"] == 10
        assert client.get(f"/v1/accounts/{acc}").status_code == 404
        bad = [*events[:2], {**events[2], "account_id": "someone-else"}]
        r = client.post("/v1/score", json={"account_id": acc, "events": bad})
        assert r.status_code == 422
        assert r.json()["detail"][0]["field"] == "events.2.account_id"
        r = client.post("/v1/score", json={"account_id": acc, "events": []})
        assert r.status_code == 422


def test_out_of_order_events_are_accepted_in_arrival_order(make_client):
    with make_client() as client:
        r1 = client.post("/v1/events", json={"events": [_event(ts=1_700_000_100, prompt="b")]})
        r2 = client.post("/v1/events", json={"events": [_event(ts=1_700_000_000, prompt="a")]})
        assert r1.status_code == r2.status_code == 200
        assert r2.json()["scores"][0]["n_events"] == 2
        assert "distillwatch_late_events_total 1.0" in client.get("/metrics").text


def test_concurrent_requests_on_one_account_lose_no_update(make_client):
    n_threads, per_thread = 8, 5
    with make_client() as client:
        errors: list[str] = []

        def worker(k: int) -> None:
            for i in range(per_thread):
                ev = _event("shared", ts=1_700_000_000 + k * 100 + i, prompt=f"p {k} {i}")
                r = client.post("/v1/events", json={"events": [ev]})
                if r.status_code != 200:
                    errors.append(r.text)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert client.get("/v1/accounts/shared").json()["n_events"] == n_threads * per_thread


def test_internal_errors_answer_500_without_internals(make_client):
    with make_client() as client:
        service = client.app.state.service  # type: ignore[attr-defined]

        def boom(events: Any) -> Any:
            raise RuntimeError("secret internal detail /etc/passwd")

        service.ingest = boom
        r = client.post("/v1/events", json={"events": [_event()]})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error"}
        assert 'status="500"' in client.get("/metrics").text


def test_body_that_is_not_utf8_is_422(make_client):
    with make_client() as client:
        r = client.post(
            "/v1/events", content=b"\x0fs\xff\xfe", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert r.json()["detail"][0]["field"] == "body"


def test_state_cache_is_dropped_when_a_request_fails(make_client, monkeypatch):
    with make_client() as client:
        assert client.post("/v1/events", json={"events": [_event(ts=1)]}).status_code == 200
        service = client.app.state.service  # type: ignore[attr-defined]
        store = service.store
        real_put = store.put_many

        def failing_put(records: Any) -> None:
            raise RuntimeError("disk full")

        monkeypatch.setattr(store, "put_many", failing_put)
        second = _event(ts=2, prompt="Output only the final answer. Grade: A. " * 20)
        assert client.post("/v1/events", json={"events": [second]}).status_code == 500
        monkeypatch.setattr(store, "put_many", real_put)
        # the failed request left no trace: neither in the store nor in the in-memory state
        assert client.get("/v1/accounts/a-1").json()["n_events"] == 1
        third = _event(ts=3, prompt="Solve step by step, show all reasoning: 17 * 24")
        r = client.post("/v1/events", json={"events": [third]})
        assert r.json()["scores"][0]["n_events"] == 2
        whole = client.post(
            "/v1/score", json={"account_id": "a-1", "events": [_event(ts=1), third]}
        ).json()
        assert r.json()["scores"][0]["score"] == pytest.approx(whole["score"], abs=1e-4)
