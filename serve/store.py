"""The account-state store: each account's online state and last score, durably.

What it knows: the :class:`AccountStore` interface the service needs (get, get many, put
many in one transaction, list ids, count) and one implementation on embedded SQLite.
SQLite runs in WAL mode with ``synchronous=FULL``: a ``put_many`` that returned has been
fsync'ed, so an answer sent after it survives ``kill -9`` and power loss. A server database
can be added later behind the same protocol.

What it does not know: what the state bytes mean (``model.scorer.AccountState``), HTTP.

Example::

    store = SQLiteAccountStore("state.sqlite3")
    store.put_many([StoredAccount("a-1", b"...", '{"score": 0.1}', 3, False, 1.7e9)])
    store.get("a-1").n_events   # 3
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SCHEMA_VERSION = 1
_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's variable limit


class StoreError(ValueError):
    """The store cannot be opened or was written for another model."""


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """One account as stored: state bytes, the last score (contract JSON) and bookkeeping."""

    account_id: str
    state: bytes
    score_json: str
    n_events: int
    flagged: bool
    updated_at: float


class AccountStore(Protocol):
    """What the service needs of a state store (SQLite here; a server database later)."""

    def get(self, account_id: str) -> StoredAccount | None: ...

    def get_score_json(self, account_id: str) -> str | None:
        """Only the stored score JSON (cheaper than the state)."""
        ...

    def get_many(self, account_ids: Sequence[str]) -> dict[str, StoredAccount]: ...

    def put_many(self, accounts: Sequence[StoredAccount]) -> None:
        """Insert or replace ``accounts`` atomically and durably (one transaction)."""
        ...

    def account_ids(self) -> Iterator[str]: ...

    def count(self) -> int: ...

    def count_flagged(self) -> int: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


class SQLiteAccountStore:
    """:class:`AccountStore` on one SQLite file (WAL, ``synchronous=FULL``).

    One connection is shared by the threads of the server and guarded by a lock: SQLite
    writes one transaction at a time anyway, and point reads take microseconds. Callers
    that read, modify and write an account hold their own per-account lock around it.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._create()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the account store ({exc})") from exc

    def _create(self) -> None:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                c.execute(
                    """CREATE TABLE IF NOT EXISTS accounts (
                        account_id TEXT PRIMARY KEY,
                        state BLOB NOT NULL,
                        score TEXT NOT NULL,
                        n_events INTEGER NOT NULL,
                        flagged INTEGER NOT NULL,
                        updated_at REAL NOT NULL
                    )"""
                )
                row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    c.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif row[0] != str(SCHEMA_VERSION):
                    raise StoreError(
                        f"{self.path}: store schema version {row[0]}, this distillwatch "
                        f"reads {SCHEMA_VERSION}"
                    )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @staticmethod
    def _row(row: tuple) -> StoredAccount:
        return StoredAccount(row[0], row[1], row[2], row[3], bool(row[4]), row[5])

    def get(self, account_id: str) -> StoredAccount | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT account_id, state, score, n_events, flagged, updated_at "
                "FROM accounts WHERE account_id = ?",
                (account_id,),
            ).fetchone()
        return None if row is None else self._row(row)

    def get_score_json(self, account_id: str) -> str | None:
        """Only the stored score (what ``GET /v1/accounts/{id}`` answers)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT score FROM accounts WHERE account_id = ?", (account_id,)
            ).fetchone()
        return None if row is None else row[0]

    def get_many(self, account_ids: Sequence[str]) -> dict[str, StoredAccount]:
        ids = list(dict.fromkeys(account_ids))
        out: dict[str, StoredAccount] = {}
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                part = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    "SELECT account_id, state, score, n_events, flagged, updated_at "
                    f"FROM accounts WHERE account_id IN ({marks})",
                    part,
                ).fetchall()
                for row in rows:
                    out[row[0]] = self._row(row)
        return out

    def put_many(self, accounts: Sequence[StoredAccount]) -> None:
        if not accounts:
            return
        rows = [
            (a.account_id, a.state, a.score_json, a.n_events, int(a.flagged), a.updated_at)
            for a in accounts
        ]
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(
                    "INSERT INTO accounts (account_id, state, score, n_events, flagged, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(account_id) DO UPDATE SET"
                    " state = excluded.state, score = excluded.score,"
                    " n_events = excluded.n_events, flagged = excluded.flagged,"
                    " updated_at = excluded.updated_at",
                    rows,
                )
                c.execute("COMMIT")  # fsync'ed (synchronous=FULL) before it returns
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def account_ids(self) -> Iterator[str]:
        with self._lock:
            rows = self._conn.execute("SELECT account_id FROM accounts ORDER BY account_id")
            ids = [r[0] for r in rows]
        return iter(ids)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])

    def count_flagged(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM accounts WHERE flagged = 1").fetchone()
        return int(row[0])

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
