"""The SQLite account store: durability settings, atomic batches, round trips."""

from __future__ import annotations

import sqlite3

import pytest

from serve.store import SQLiteAccountStore, StoredAccount, StoreError


def _acc(account_id: str, n: int = 1, flagged: bool = False) -> StoredAccount:
    return StoredAccount(account_id, b"\x00state" * n, '{"score": 0.5}', n, flagged, 1.0)


def test_round_trip_and_counts(tmp_path):
    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    store.put_many([_acc("a", 2), _acc("b", 3, flagged=True)])
    assert store.get("a") == _acc("a", 2)
    assert store.get("zzz") is None
    assert set(store.get_many(["a", "b", "c"])) == {"a", "b"}
    assert list(store.account_ids()) == ["a", "b"]
    assert store.count() == 2 and store.count_flagged() == 1
    store.put_many([_acc("a", 7, flagged=True)])  # replace
    assert store.get("a").n_events == 7 and store.count_flagged() == 2
    assert store.get_score_json("b") == '{"score": 0.5}'
    store.close()
    reopened = SQLiteAccountStore(tmp_path / "s.sqlite3")
    assert reopened.get("a").n_events == 7


def test_wal_and_full_sync(tmp_path):
    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_put_many_is_one_transaction(tmp_path):
    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    store.put_many([_acc("a", 1)])
    bad = StoredAccount("b", b"x", None, 1, False, 1.0)  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.put_many([_acc("a", 5), bad])
    assert store.get("a").n_events == 1  # the first row of the failed batch was rolled back
    assert store.get("b") is None


def test_many_ids_beyond_the_variable_limit(tmp_path):
    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    store.put_many([_acc(f"a{i}") for i in range(1200)])
    assert len(store.get_many([f"a{i}" for i in range(1300)])) == 1200


def test_not_a_database(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteAccountStore(path)


def test_ring_rows_are_written_with_the_state_and_read_back(tmp_path):
    store = SQLiteAccountStore(tmp_path / "s.sqlite3")
    ring = ((0, b"\x01" * 8), (1, b"\x02" * 8))
    store.put_many([StoredAccount("a", b"s", "{}", 2, False, 1.0, ring)])
    store.put_many([StoredAccount("a", b"s", "{}", 3, False, 2.0, ((1, b"\x03" * 8),))])
    assert sorted(store.get_rings(["a", "b"])["a"]) == [(0, b"\x01" * 8), (1, b"\x03" * 8)]
    assert store.get("a").ring == ()  # reads leave the ring to get_rings
    assert store.get_rings(["b"]) == {}


def test_a_store_from_before_the_fleet_event_counts_opens_and_gains_them(tmp_path):
    from serve.store import FleetAccount, FleetWrite

    path = tmp_path / "s.sqlite3"
    SQLiteAccountStore(path).close()
    conn = sqlite3.connect(path)  # what an older distillwatch created
    with conn:
        conn.execute("DROP TABLE fleet_accounts")
        conn.execute(
            "CREATE TABLE fleet_accounts (account_id TEXT PRIMARY KEY, ip_prefix TEXT, "
            "user_agent TEXT, own_score REAL NOT NULL, reasoning_rate REAL NOT NULL)"
        )
        conn.execute("INSERT INTO fleet_accounts VALUES ('old', '10.0.0.0/24', NULL, 0.2, 0.1)")
    conn.close()
    store = SQLiteAccountStore(path)
    assert store.fleet_accounts(["old"]) == [("old", "10.0.0.0/24", None, 0.2, 0.1, 0)]
    new = FleetAccount("new", None, "ua", 0.9, 0.8, 41)
    store.put_many([_acc("new")], FleetWrite([], [new], 4, 10))
    assert store.fleet_accounts(["new"]) == [("new", None, "ua", 0.9, 0.8, 41)]
