"""A cache of prompt embeddings keyed by (encoder identity, sha256 of the text).

Embedding is the expensive step of scoring, and the same prompts come back again and again
(templates, retries, fleets of accounts sending one probe set), so every vector is stored once
per encoder. The encoder identity namespaces the rows: two different encoders (other weights,
another ``max_seq_length``, another backend) never read each other's vectors.

Two storages, one interface (``get_many`` / ``put_many`` / ``len``):

* persistent: one SQLite file in WAL mode (many concurrent readers, one writer at a time),
  vectors stored as float16 bytes (768 bytes for 384 dims), optionally fronted by an
  in-memory LRU of the hottest rows;
* in memory (``EmbeddingCache.memory()``): a dict or an LRU, for tests and for a service
  that should not touch the disk.

Both round vectors to float16, so a vector read back is the same whichever storage served it.
This module knows nothing about models or texts beyond their hash.

Example::

    cache = EmbeddingCache()                     # ~/.cache/distillwatch/embeddings.sqlite3
    key = text_key("What is 2 + 2?")
    cache.put_many("my-encoder", {key: vector})
    cache.get_many("my-encoder", [key])          # {key: array([...], dtype=float32)}
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import numpy as np

CACHE_DIR_ENV = "DISTILLWATCH_CACHE_DIR"
CACHE_FILE_NAME = "embeddings.sqlite3"
_SCHEMA_VERSION = 1
# SQLite allows 32,766 bound parameters since 3.32; stay far below for older builds.
_SQL_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS encoders (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    dim INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    encoder INTEGER NOT NULL REFERENCES encoders(id),
    key BLOB NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (encoder, key)
) WITHOUT ROWID;
"""


def default_cache_dir() -> Path:
    """Cache directory: ``$DISTILLWATCH_CACHE_DIR``, else ``~/.cache/distillwatch``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distillwatch"


def default_cache_path() -> Path:
    """Default SQLite file of the persistent embedding cache."""
    return default_cache_dir() / CACHE_FILE_NAME


def text_key(text: str) -> str:
    """Cache key of a text: the hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _key_blobs(keys: Iterable[str]) -> list[bytes]:
    try:
        return [bytes.fromhex(key) for key in keys]
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"cache keys must be hex sha256 digests made by text_key(): {exc}"
        ) from exc


@functools.cache
def _half_table() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def _half_to_float(bits: np.ndarray) -> np.ndarray:
    """float16 bit patterns → float32; a table look-up is ~10x numpy's own float16 cast here."""
    return _half_table()[bits]


def _as_f16_row(identity: str, key: str, vector: np.ndarray, dim: int | None) -> np.ndarray:
    row = np.asarray(vector)
    if row.ndim != 1 or (dim is not None and row.shape[0] != dim):
        expected = f"({dim},)" if dim is not None else "a 1-d vector"
        raise ValueError(
            f"embedding for key {key[:12]}… of encoder {identity!r} has shape {row.shape}, "
            f"expected {expected}"
        )
    return row.astype(np.float16)


class EmbeddingCache:
    """Persistent (SQLite) or in-memory store of embeddings; see the module docstring.

    Args:
        path: SQLite file; ``None`` means :func:`default_cache_path`. Opened on first use.
        lru_size: how many recently used vectors to also keep in memory (0: none).

    Thread-safe (one connection behind a lock); several processes may read the same file
    while one of them writes.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, lru_size: int = 0) -> None:
        if isinstance(lru_size, bool) or not isinstance(lru_size, int) or lru_size < 0:
            raise ValueError(f"lru_size must be an int >= 0, got {lru_size!r}")
        self.path: Path | None = Path(path).expanduser() if path is not None else None
        self.lru_size = lru_size
        self._persistent = True
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._encoder_ids: dict[str, int] = {}
        self._dims: dict[str, int] = {}
        self._memory: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    @classmethod
    def memory(cls, max_items: int | None = None) -> EmbeddingCache:
        """An in-memory cache: a plain dict, or an LRU of at most ``max_items`` vectors."""
        if max_items is not None and (not isinstance(max_items, int) or max_items <= 0):
            raise ValueError(f"max_items must be a positive int or None, got {max_items!r}")
        cache = cls(lru_size=max_items or 0)
        cache._persistent = False
        return cache

    @property
    def persistent(self) -> bool:
        return self._persistent

    def __repr__(self) -> str:
        if not self._persistent:
            return f"EmbeddingCache.memory(max_items={self.lru_size or None})"
        return f"EmbeddingCache({str(self._resolved_path())!r}, lru_size={self.lru_size})"

    # -- public API ---------------------------------------------------------------------------

    def get_many(self, identity: str, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors (float32, shape ``(dim,)``) of the keys present; absent keys are left out."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        with self._lock:
            if self._memory:
                missing = []
                for key in wanted:
                    vec = self._memory.get((identity, key))
                    if vec is None:
                        missing.append(key)
                        continue
                    found[key] = vec
                    if self.lru_size:
                        self._memory.move_to_end((identity, key))
                wanted = missing
            if not self._persistent or not wanted:
                return found
            from_disk = self._sql_get(identity, wanted)
            if self.lru_size:
                for key, vec in from_disk.items():
                    self._remember(identity, key, vec)
        found.update(from_disk)
        return found

    def put_many(
        self,
        identity: str,
        items: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    ) -> None:
        """Store vectors (any float dtype, kept as float16); existing keys are replaced."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        if not pairs:
            return
        blobs = _key_blobs(key for key, _ in pairs)
        with self._lock:
            dim = self._dims.get(identity)
            rows = []
            for key, vec in pairs:
                row = _as_f16_row(identity, key, vec, dim)
                dim = row.shape[0]
                rows.append(row)
            assert dim is not None
            if self._persistent:
                self._sql_put(identity, dim, blobs, rows)
            self._dims[identity] = dim
            if self._persistent and not self.lru_size:
                return
            for (key, _), row in zip(pairs, rows, strict=True):
                self._remember(identity, key, row.astype(np.float32))

    def __len__(self) -> int:
        """Number of stored vectors, all encoders together."""
        with self._lock:
            if not self._persistent:
                return len(self._memory)
            (count,) = self._connect().execute("SELECT COUNT(*) FROM embeddings").fetchone()
            return int(count)

    def count(self, identity: str) -> int:
        """Number of stored vectors of one encoder."""
        with self._lock:
            if not self._persistent:
                return sum(1 for ident, _ in self._memory if ident == identity)
            encoder = self._encoder_id(identity, create=False)
            if encoder is None:
                return 0
            (count,) = (
                self._connect()
                .execute("SELECT COUNT(*) FROM embeddings WHERE encoder = ?", (encoder,))
                .fetchone()
            )
            return int(count)

    def identities(self) -> list[str]:
        """Encoder identities that have vectors here."""
        with self._lock:
            if not self._persistent:
                return sorted({ident for ident, _ in self._memory})
            rows = self._connect().execute(
                "SELECT identity FROM encoders WHERE EXISTS "
                "(SELECT 1 FROM embeddings WHERE encoder = encoders.id) ORDER BY identity"
            )
            return [ident for (ident,) in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._encoder_ids.clear()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, object]:
        """Pickle the location and settings only (for DataLoader workers and process pools)."""
        return {"path": self.path, "lru_size": self.lru_size, "persistent": self._persistent}

    def __setstate__(self, state: dict[str, object]) -> None:
        path = state["path"]
        lru_size = state["lru_size"]
        assert isinstance(lru_size, int)
        self.__init__(path if isinstance(path, Path) else None, lru_size=lru_size)  # type: ignore[misc]
        self._persistent = bool(state["persistent"])

    # -- internals (callers hold self._lock) --------------------------------------------------

    def _remember(self, identity: str, key: str, vec: np.ndarray) -> None:
        self._memory[(identity, key)] = vec
        if self.lru_size:
            self._memory.move_to_end((identity, key))
            while len(self._memory) > self.lru_size:
                self._memory.popitem(last=False)

    def _resolved_path(self) -> Path:
        return self.path if self.path is not None else default_cache_path()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        path = self._resolved_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # read through a memory map, not one pread() per page: hit look-ups are the hot path
            conn.execute(f"PRAGMA mmap_size={1 << 30}")
            conn.execute("PRAGMA cache_size=-65536")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version not in (0, _SCHEMA_VERSION):
                conn.close()
                raise RuntimeError(
                    f"embedding cache {path} has schema version {version}, this code reads "
                    f"version {_SCHEMA_VERSION}; delete the file to rebuild it"
                )
            if version == 0:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise RuntimeError(
                f"cannot open embedding cache {path}: {exc}. Is it a distillwatch embedding "
                f"cache? Delete it to rebuild, or point {CACHE_DIR_ENV} elsewhere."
            ) from exc
        self._conn = conn
        return conn

    def _encoder_id(self, identity: str, create: bool, dim: int = 0) -> int | None:
        encoder = self._encoder_ids.get(identity)
        if encoder is not None:
            return encoder
        conn = self._connect()
        query = "SELECT id, dim FROM encoders WHERE identity = ?"
        row = conn.execute(query, (identity,)).fetchone()
        if row is None:
            if not create:
                return None
            conn.execute(
                "INSERT OR IGNORE INTO encoders (identity, dim) VALUES (?, ?)", (identity, dim)
            )
            row = conn.execute(query, (identity,)).fetchone()
        self._encoder_ids[identity] = int(row[0])
        self._dims[identity] = int(row[1])
        return int(row[0])

    def _sql_get(self, identity: str, keys: list[str]) -> dict[str, np.ndarray]:
        encoder = self._encoder_id(identity, create=False)
        if encoder is None:
            return {}
        dim = self._dims[identity]
        conn = self._connect()
        by_blob = dict(zip(_key_blobs(keys), keys, strict=True))
        blobs = list(by_blob)
        found: list[str] = []
        vecs: list[bytes] = []
        for start in range(0, len(blobs), _SQL_CHUNK):
            chunk = blobs[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key, vec FROM embeddings WHERE encoder = ? AND key IN ({marks})",
                (encoder, *chunk),
            )
            for blob, vec in rows:
                found.append(by_blob[blob])
                vecs.append(vec)
        if not vecs:
            return {}
        joined = b"".join(vecs)
        if len(joined) != len(vecs) * dim * 2:
            raise RuntimeError(
                f"embedding cache {self._resolved_path()} holds vectors of the wrong size for "
                f"encoder {identity!r} (expected {dim} float16 values each); delete the file"
            )
        halves = np.frombuffer(joined, dtype=np.uint16).reshape(len(vecs), dim)  # (K, D)
        return dict(zip(found, _half_to_float(halves), strict=True))

    def _sql_put(self, identity: str, dim: int, blobs: list[bytes], rows: list[np.ndarray]) -> None:
        conn = self._connect()
        encoder = self._encoder_id(identity, create=True, dim=dim)
        if self._dims[identity] != dim:
            raise ValueError(
                f"encoder {identity!r} stores {self._dims[identity]}-dim vectors in "
                f"{self._resolved_path()}, got {dim}-dim ones"
            )
        params = [(encoder, blob, row.tobytes()) for blob, row in zip(blobs, rows, strict=True)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO embeddings (encoder, key, vec) VALUES (?, ?, ?)", params
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
