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
