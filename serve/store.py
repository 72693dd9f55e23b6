"""The account-state store: each account's online state and last score, durably.

What it knows: the :class:`AccountStore` interface the service needs (get, get many, put
many in one transaction, list ids, count) and one implementation on embedded SQLite.
Beside the account states it keeps the live fleet layer's inputs (``serve/fleets.py``): a
bounded window of recent prompts (float16 embedding, wrapper key, time) and each account's
IP prefix, user agent and latest own score, written in the SAME transaction as the states
so that what was acknowledged is never lost. An account's embeddings ring (the bulk of its
state: up to 64 float32 vectors) lives in its own table, one row per slot, so an update
writes the slots it changed (about 1.5 KiB per new prompt) instead of the whole ring.
SQLite runs in WAL mode with ``synchronous=FULL``: a ``put_many`` that returned has been
fsync'ed, so an answer sent after it survives ``kill -9`` and power loss. A server database
can be added later behind the same protocol.

What it does not know: what the state bytes mean (``model.scorer.AccountState``), HTTP.

Example::

    store = SQLiteAccountStore("state.sqlite3")
    store.put_many([StoredAccount("a-1", b"...", '{"score": 0.1}', 3, False, 1.7e9)])
    store.get("a-1").n_events   # 3
    store.put_many(states, FleetWrite(prompts, accounts, max_per_account=64, max_total=100_000))
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SCHEMA_VERSION = 1  # the fleet tables are additive: created on open when missing
_CHUNK = 500  # ids per `IN (...)` query, well under SQLite's variable limit

#: One prompt of the fleet window as read back: (seq, account_id, ts, template_key, embedding,
#: ip_prefix).
FleetPromptRow = tuple[int, str, float, int, bytes, str | None]
#: One account's fleet inputs: (account_id, ip_prefix, user_agent, own_score, reasoning_rate,
#: n_events).
FleetAccountRow = tuple[str, str | None, str | None, float, float, int]


def _id_chunks(account_ids: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """The distinct ids in ``_CHUNK``-sized parts, each with its ``?,?,...`` placeholders."""
    ids = list(dict.fromkeys(account_ids))
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        yield part, ",".join("?" * len(part))


class StoreError(ValueError):
    """The store cannot be opened or was written for another model."""


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """One account as stored: state bytes, the last score (contract JSON) and bookkeeping.

    ``ring``: on ``put_many``, the ``(slot, bytes)`` rows of the state's embeddings ring
    that changed (a state written with ``AccountState.to_bytes(ring=False)`` keeps its ring
    beside it, slot by slot, so an update rewrites only its new slots instead of the whole
    ring). Reads leave it empty: :meth:`AccountStore.get_rings` gives every stored slot.
    """

    account_id: str
    state: bytes
    score_json: str
    n_events: int
    flagged: bool
    updated_at: float
    ring: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class FleetPrompt:
    """One prompt of the fleet window: who sent it, when, its wrapper and its embedding."""

    account_id: str
    ts: float
    template_key: int  # ``model.fleet.template_signature``; 0 = no wrapper
    embedding: bytes  # float16 (D,), native byte order
    ip_prefix: str | None = None  # of the address this prompt came from


@dataclass(frozen=True, slots=True)
class FleetAccount:
    """One account's fleet inputs; a ``None`` IP prefix / user agent keeps the stored one."""

    account_id: str
    ip_prefix: str | None
    user_agent: str | None
    own_score: float
    reasoning_rate: float
    n_events: int = 0  # events the account has sent in all (0: not known)


@dataclass(frozen=True, slots=True)
class FleetWrite:
    """Fleet inputs of one ingest and the window bounds to apply in the same transaction.

    After the insert, each touched account keeps only its ``max_per_account`` newest
    prompts and the whole window its ``max_total`` newest (by arrival, i.e. ``seq``).
    """

    prompts: Sequence[FleetPrompt]
    accounts: Sequence[FleetAccount]
    max_per_account: int
    max_total: int


@dataclass(frozen=True, slots=True)
class FleetWritten:
    """What a :class:`FleetWrite` did: the ``seq`` of its first prompt (the others follow
    consecutively; ``seq`` order is commit order) and how many older prompts it evicted."""

    first_seq: int
    n_evicted: int


class AccountStore(Protocol):
    """What the service needs of a state store (SQLite here; a server database later)."""

    def get(self, account_id: str) -> StoredAccount | None: ...

    def get_score_json(self, account_id: str) -> str | None:
        """Only the stored score JSON (cheaper than the state)."""
        ...

    def get_many(self, account_ids: Sequence[str]) -> dict[str, StoredAccount]: ...

    def get_rings(self, account_ids: Sequence[str]) -> dict[str, list[tuple[int, bytes]]]:
        """Every stored ring slot ``(slot, bytes)`` of those of ``account_ids`` that have any."""
        ...

    def put_many(
        self, accounts: Sequence[StoredAccount], fleet: FleetWrite | None = None
    ) -> FleetWritten | None:
        """Insert or replace ``accounts`` and append ``fleet`` (evicting beyond its bounds),
        atomically and durably (one transaction). ``None`` when no ``fleet`` was given."""
        ...

    def fleet_prompts(self, after_seq: int, limit: int) -> list[FleetPromptRow]:
        """Up to ``limit`` prompts of the fleet window with ``seq > after_seq``, by ``seq``."""
        ...

    def fleet_accounts(self, account_ids: Sequence[str]) -> list[FleetAccountRow]:
        """The stored fleet inputs of those of ``account_ids`` that have any."""
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
    that read, modify and write an account serialize that themselves (the service: one ingest
    at a time).
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0, readonly: bool = False):
        """``readonly``: a reader of a store another connection created (the service's
        worker processes); it creates nothing and every write fails."""
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        try:
            if readonly:
                if not self.path.is_file():
                    raise StoreError(f"{self.path}: no account store to read")
                self._conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
                self._conn.execute("SELECT 1 FROM accounts LIMIT 1").fetchall()
                self._n_fleet_prompts = 0
                return
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._create()
            self._n_fleet_prompts = int(
                self._conn.execute("SELECT COUNT(*) FROM fleet_prompts").fetchone()[0]
            )
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
                # the fleet window: AUTOINCREMENT so that seq is never reused and, since
                # transactions are serialized, seq order is commit order
                c.execute(
                    """CREATE TABLE IF NOT EXISTS fleet_prompts (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        account_id TEXT NOT NULL,
                        ts REAL NOT NULL,
                        template_key INTEGER NOT NULL,
                        embedding BLOB NOT NULL
                    )"""
                )
                columns = {r[1] for r in c.execute("PRAGMA table_info(fleet_prompts)")}
                if "ip_prefix" not in columns:  # additive: older windows read as unknown
                    c.execute("ALTER TABLE fleet_prompts ADD COLUMN ip_prefix TEXT")
                c.execute(
                    "CREATE INDEX IF NOT EXISTS fleet_prompts_account "
                    "ON fleet_prompts (account_id, seq)"
                )
                # embeddings rings of states stored without theirs; a rowid table: with rows
                # of 1.5 KiB, WITHOUT ROWID writes cost twice as much (measured)
                c.execute(
                    """CREATE TABLE IF NOT EXISTS account_ring (
                        account_id TEXT NOT NULL,
                        slot INTEGER NOT NULL,
                        embedding BLOB NOT NULL,
                        PRIMARY KEY (account_id, slot)
                    )"""
                )
                c.execute(
                    """CREATE TABLE IF NOT EXISTS fleet_accounts (
                        account_id TEXT PRIMARY KEY,
                        ip_prefix TEXT,
                        user_agent TEXT,
                        own_score REAL NOT NULL,
                        reasoning_rate REAL NOT NULL,
                        n_events INTEGER NOT NULL DEFAULT 0
                    )"""
                )
                columns = {r[1] for r in c.execute("PRAGMA table_info(fleet_accounts)")}
                if "n_events" not in columns:  # a store written before the column: additive
                    c.execute(
                        "ALTER TABLE fleet_accounts ADD COLUMN n_events INTEGER NOT NULL DEFAULT 0"
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
        out: dict[str, StoredAccount] = {}
        with self._lock:
            for part, marks in _id_chunks(account_ids):
                rows = self._conn.execute(
                    "SELECT account_id, state, score, n_events, flagged, updated_at "
                    f"FROM accounts WHERE account_id IN ({marks})",
                    part,
                ).fetchall()
                for row in rows:
                    out[row[0]] = self._row(row)
        return out

    def get_rings(self, account_ids: Sequence[str]) -> dict[str, list[tuple[int, bytes]]]:
        out: dict[str, list[tuple[int, bytes]]] = {}
        with self._lock:
            for part, marks in _id_chunks(account_ids):
                for account_id, slot, blob in self._conn.execute(
                    "SELECT account_id, slot, embedding FROM account_ring "
                    f"WHERE account_id IN ({marks})",
                    part,
                ):
                    out.setdefault(account_id, []).append((slot, blob))
        return out

    def put_many(
        self, accounts: Sequence[StoredAccount], fleet: FleetWrite | None = None
    ) -> FleetWritten | None:
        if not accounts and (fleet is None or not (fleet.prompts or fleet.accounts)):
            return None if fleet is None else FleetWritten(0, 0)
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
                c.executemany(
                    "INSERT OR REPLACE INTO account_ring (account_id, slot, embedding)"
                    " VALUES (?, ?, ?)",
                    [(a.account_id, slot, blob) for a in accounts for slot, blob in a.ring],
                )
                written = None if fleet is None else self._write_fleet(c, fleet)
                c.execute("COMMIT")  # fsync'ed (synchronous=FULL) before it returns
            except BaseException:
                c.execute("ROLLBACK")
                raise
            if fleet is not None and written is not None:
                self._n_fleet_prompts += len(fleet.prompts) - written.n_evicted
        return written

    def _write_fleet(self, c: sqlite3.Connection, fleet: FleetWrite) -> FleetWritten:
        """Inside the open transaction: append, then evict beyond the bounds (oldest first)."""
        c.executemany(
            "INSERT INTO fleet_accounts (account_id, ip_prefix, user_agent, own_score,"
            " reasoning_rate, n_events) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(account_id)"
            " DO UPDATE SET n_events = excluded.n_events,"
            " ip_prefix = COALESCE(excluded.ip_prefix, fleet_accounts.ip_prefix),"
            " user_agent = COALESCE(excluded.user_agent, fleet_accounts.user_agent),"
            " own_score = excluded.own_score, reasoning_rate = excluded.reasoning_rate",
            [
                (
                    a.account_id,
                    a.ip_prefix,
                    a.user_agent,
                    a.own_score,
                    a.reasoning_rate,
                    a.n_events,
                )
                for a in fleet.accounts
            ],
        )
        if not fleet.prompts:
            return FleetWritten(0, 0)
        c.executemany(
            "INSERT INTO fleet_prompts (account_id, ts, template_key, embedding, ip_prefix)"
            " VALUES (?, ?, ?, ?, ?)",
            [(p.account_id, p.ts, p.template_key, p.embedding, p.ip_prefix) for p in fleet.prompts],
        )
        last = int(c.execute("SELECT last_insert_rowid()").fetchone()[0])
        touched = list(dict.fromkeys(p.account_id for p in fleet.prompts))
        cur = c.executemany(
            "DELETE FROM fleet_prompts WHERE account_id = ?1 AND seq <= (SELECT seq FROM"
            " fleet_prompts WHERE account_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            [(a, fleet.max_per_account) for a in touched],
        )
        evicted = max(cur.rowcount, 0)
        excess = self._n_fleet_prompts + len(fleet.prompts) - evicted - fleet.max_total
        if excess > 0:
            cur = c.execute(
                "DELETE FROM fleet_prompts WHERE seq <= (SELECT seq FROM fleet_prompts"
                " ORDER BY seq LIMIT 1 OFFSET ?)",
                (excess - 1,),
            )
            evicted += max(cur.rowcount, 0)
        return FleetWritten(last - len(fleet.prompts) + 1, evicted)

    def fleet_prompts(self, after_seq: int, limit: int) -> list[FleetPromptRow]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, account_id, ts, template_key, embedding, ip_prefix FROM fleet_prompts"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [(int(r[0]), r[1], float(r[2]), int(r[3]), r[4], r[5]) for r in rows]

    def fleet_accounts(self, account_ids: Sequence[str]) -> list[FleetAccountRow]:
        out: list[FleetAccountRow] = []
        for part, marks in _id_chunks(account_ids):  # the lock is released between chunks
            with self._lock:
                rows = self._conn.execute(
                    "SELECT account_id, ip_prefix, user_agent, own_score, reasoning_rate, n_events"
                    f" FROM fleet_accounts WHERE account_id IN ({marks})",
                    part,
                ).fetchall()
            out.extend((r[0], r[1], r[2], float(r[3]), float(r[4]), int(r[5])) for r in rows)
        return out

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
