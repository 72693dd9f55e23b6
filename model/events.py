"""Interaction events: the contract's input records, validated, streamed and grouped by account.

What it knows: the event format (account_id, ts, prompt and the optional fields), how to
read it from JSON Lines (plain or gzip) and Parquet in bounded-memory batches, how to turn
a bad record into an error that names file, line (or row) and field, and how to hold many
events compactly as an Arrow table sorted by (account, time).

What it does not know: anything about features, embeddings or scores.

Example::

    table = read_events("data_samples/events.jsonl")
    for account in table.accounts():
        print(account.account_id, len(account))
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

OnError = Literal["raise", "skip"]

#: Optional string fields of an event, in output order.
OPTIONAL_STR_FIELDS: tuple[str, ...] = (
    "conversation_id",
    "model",
    "ip",
    "user_agent",
    "system",
)
MAX_ACCOUNT_ID_CHARS = 128
_BATCH_ROWS = 50_000

SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("prompt", pa.large_string(), nullable=False),
        pa.field("conversation_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("max_tokens", pa.int64()),
        pa.field("ip", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("system", pa.large_string()),
        pa.field("seq", pa.int64(), nullable=False),
    ]
)


class EventError(ValueError):
    """A record that breaks the event format; names where it is and what is wrong."""

    def __init__(self, source: str, line: int | None, field_name: str | None, message: str):
        self.source = source
        self.line = line
        self.field = field_name
        self.message = message
        where = source if line is None else f"{source}:{line}"
        what = f"field '{field_name}': " if field_name else ""
        super().__init__(f"{where}: {what}{message}")


@dataclass
class ReadStats:
    """Counts of what a read accepted and skipped; the first few errors are kept verbatim."""

    n_read: int = 0
    n_skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def skip(self, error: EventError) -> None:
        self.n_skipped += 1
        if len(self.examples) < 5:
            self.examples.append(str(error))

    def summary(self) -> str:
        text = f"read {self.n_read} events, skipped {self.n_skipped} bad records"
        if self.examples:
            text += " (first: " + self.examples[0] + ")"
        return text


@dataclass(frozen=True, slots=True)
class Event:
    """One API request, with ``ts`` as UTC epoch seconds."""

    account_id: str
    ts: float
    prompt: str
    conversation_id: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    ip: str | None = None
    user_agent: str | None = None
    system: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The contract record (RFC 3339 ``ts``), without absent optional fields."""
        rec: dict[str, Any] = {
            "account_id": self.account_id,
            "ts": format_ts(self.ts),
            "prompt": self.prompt,
        }
        for name in ("conversation_id", "model", "max_tokens", "ip", "user_agent", "system"):
            value = getattr(self, name)
            if value is not None:
                rec[name] = value
        return rec


# --------------------------------------------------------------------------- parsing


def parse_ts(value: Any) -> float:
    """RFC 3339 string (any offset; ``Z`` accepted) or epoch seconds → UTC epoch seconds.

    A string without an offset is rejected: a naive local time is ambiguous.
    """
    if isinstance(value, bool):
        raise ValueError("expected an RFC 3339 string or epoch seconds, got a boolean")
    if isinstance(value, int | float):
        ts = float(value)
        if not math.isfinite(ts):
            raise ValueError(f"epoch seconds must be finite, got {value!r}")
        return ts
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp has no UTC offset: {value!r} (add 'Z' or '+hh:mm')")
        return parsed.timestamp()
    raise ValueError(f"expected an RFC 3339 string or epoch seconds, got {type(value).__name__}")


def format_ts(ts: float) -> str:
    """UTC epoch seconds → RFC 3339 with ``Z`` (millisecond precision when needed)."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_event(record: Any, *, source: str = "<input>", line: int | None = None) -> Event:
    """Validate one decoded record against the contract; raise :class:`EventError` if it breaks it."""

    def fail(field_name: str | None, message: str) -> EventError:
        return EventError(source, line, field_name, message)

    if not isinstance(record, Mapping):
        raise fail(None, f"expected a JSON object, got {type(record).__name__}")
    account_id = record.get("account_id")
    if account_id is None:
        raise fail("account_id", "required field is missing")
    if not isinstance(account_id, str):
        raise fail("account_id", f"expected a string, got {type(account_id).__name__}")
    if not 1 <= len(account_id) <= MAX_ACCOUNT_ID_CHARS:
        raise fail("account_id", f"must be 1-{MAX_ACCOUNT_ID_CHARS} characters")
    if "ts" not in record or record["ts"] is None:
        raise fail("ts", "required field is missing")
    try:
        ts = parse_ts(record["ts"])
    except ValueError as exc:
        raise fail("ts", str(exc)) from None
    prompt = record.get("prompt")
    if prompt is None:
        raise fail("prompt", "required field is missing")
    if not isinstance(prompt, str):
        raise fail("prompt", f"expected a string, got {type(prompt).__name__}")
    optional: dict[str, Any] = {}
    for name in OPTIONAL_STR_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise fail(name, f"expected a string, got {type(value).__name__}")
        optional[name] = value
    max_tokens = record.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, float) and max_tokens.is_integer():
            max_tokens = int(max_tokens)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise fail("max_tokens", f"expected an integer, got {max_tokens!r}")
        if max_tokens < 0:
            raise fail("max_tokens", f"must be >= 0, got {max_tokens}")
    return Event(account_id=account_id, ts=ts, prompt=prompt, max_tokens=max_tokens, **optional)


# --------------------------------------------------------------------------- account view


@dataclass
class AccountEvents:
    """One account's events, time-ordered, as columns (what features and the network read)."""

    account_id: str
    ts: np.ndarray  # (T,) float64 UTC epoch seconds, non-decreasing
    prompts: list[str]
    max_tokens: np.ndarray  # (T,) float64, NaN where absent
    conversation_id: list[str | None]
    ip: list[str | None]
    user_agent: list[str | None]
    system: list[str | None]
    model: list[str | None]

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int) -> AccountEvents:
        """The first ``n`` events (what an online scorer had seen after event ``n``)."""
        return self.slice(0, n)

    def slice(self, start: int, stop: int) -> AccountEvents:
        return AccountEvents(
            account_id=self.account_id,
            ts=self.ts[start:stop],
            prompts=self.prompts[start:stop],
            max_tokens=self.max_tokens[start:stop],
            conversation_id=self.conversation_id[start:stop],
            ip=self.ip[start:stop],
            user_agent=self.user_agent[start:stop],
            system=self.system[start:stop],
            model=self.model[start:stop],
        )

    def events(self) -> list[Event]:
        return [
            Event(
                account_id=self.account_id,
                ts=float(self.ts[i]),
                prompt=self.prompts[i],
                conversation_id=self.conversation_id[i],
                model=self.model[i],
                max_tokens=None if math.isnan(self.max_tokens[i]) else int(self.max_tokens[i]),
                ip=self.ip[i],
                user_agent=self.user_agent[i],
                system=self.system[i],
            )
            for i in range(len(self))
        ]

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> AccountEvents:
        """Columns from events of ONE account; sorts by time (stable)."""
        if not events:
            raise ValueError("an account needs at least one event")
        ids = {e.account_id for e in events}
        if len(ids) != 1:
            raise ValueError(f"events of several accounts given: {sorted(ids)[:3]}")
        order = sorted(range(len(events)), key=lambda i: events[i].ts)
        ev = [events[i] for i in order]
        return cls(
            account_id=ev[0].account_id,
            ts=np.array([e.ts for e in ev], dtype=np.float64),
            prompts=[e.prompt for e in ev],
            max_tokens=np.array(
                [np.nan if e.max_tokens is None else e.max_tokens for e in ev], dtype=np.float64
            ),
            conversation_id=[e.conversation_id for e in ev],
            ip=[e.ip for e in ev],
            user_agent=[e.user_agent for e in ev],
            system=[e.system for e in ev],
            model=[e.model for e in ev],
        )


class EventTable:
    """Many accounts' events as one Arrow table sorted by (account_id, ts, arrival order).

    Arrow keeps strings in contiguous buffers, so millions of events cost little more than
    their text. Build it with :func:`read_events` or :meth:`from_events`.
    """

    def __init__(self, table: pa.Table, stats: ReadStats | None = None):
        self.table = table
        self.stats = stats or ReadStats(n_read=table.num_rows)
        self._bounds: tuple[np.ndarray, np.ndarray, list[str]] | None = None

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventTable:
        builder = _BatchBuilder()
        batches = [b for ev in events if (b := builder.add(ev)) is not None]
        batches.append(builder.flush())
        return cls._sorted(batches, ReadStats(n_read=builder.total))

    @classmethod
    def from_records(
        cls, records: Iterable[Any], *, source: str = "<records>", on_error: OnError = "raise"
    ) -> EventTable:
        """Validate decoded records (dicts) into a table; line numbers count from 1."""
        stats = ReadStats()
        return cls._sorted(list(_records_to_batches(records, source, on_error, stats)), stats)

    @classmethod
    def _sorted(cls, batches: list[pa.RecordBatch], stats: ReadStats) -> EventTable:
        table = pa.Table.from_batches(batches, schema=SCHEMA)
        if table.num_rows:
            table = table.sort_by([("account_id", "ascending"), ("ts", "ascending"), ("seq", "ascending")])
        return cls(table.combine_chunks(), stats)

    def __len__(self) -> int:
        return self.table.num_rows

    def _account_bounds(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if self._bounds is None:
            ids = self.table.column("account_id").combine_chunks()
            if len(ids) == 0:
                self._bounds = (np.zeros(0, np.int64), np.zeros(0, np.int64), [])
            else:
                ree = pc.run_end_encode(ids)
                ends = np.asarray(ree.run_ends, dtype=np.int64)
                starts = np.concatenate([[0], ends[:-1]])
                self._bounds = (starts, ends, ree.values.to_pylist())
        return self._bounds

    @property
    def account_ids(self) -> list[str]:
        return list(self._account_bounds()[2])

    @property
    def n_accounts(self) -> int:
        return len(self._account_bounds()[2])

    def accounts(self) -> Iterator[AccountEvents]:
        """Each account's events in time order, one account at a time."""
        starts, ends, ids = self._account_bounds()
        for start, end, account_id in zip(starts, ends, ids, strict=True):
            yield self._account(account_id, int(start), int(end))

    def account(self, account_id: str) -> AccountEvents:
        starts, ends, ids = self._account_bounds()
        try:
            i = ids.index(account_id)
        except ValueError:
            raise KeyError(f"unknown account_id {account_id!r}") from None
        return self._account(account_id, int(starts[i]), int(ends[i]))

    def _account(self, account_id: str, start: int, end: int) -> AccountEvents:
        part = self.table.slice(start, end - start)
        max_tokens = part.column("max_tokens").to_numpy(zero_copy_only=False)
        return AccountEvents(
            account_id=account_id,
            ts=part.column("ts").to_numpy(),
            prompts=part.column("prompt").to_pylist(),
            max_tokens=np.asarray(max_tokens, dtype=np.float64),
            conversation_id=part.column("conversation_id").to_pylist(),
            ip=part.column("ip").to_pylist(),
            user_agent=part.column("user_agent").to_pylist(),
            system=part.column("system").to_pylist(),
            model=part.column("model").to_pylist(),
        )

    def unique_prompts(self) -> list[str]:
        """Distinct prompt texts (what the embedder has to see at most once)."""
        return pc.unique(self.table.column("prompt")).to_pylist()

    def to_pandas(self) -> Any:
        """A DataFrame with a UTC ``ts`` datetime column (for notebooks)."""
        df = self.table.drop(["seq"]).to_pandas()
        import pandas as pd

        df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True)
        return df


class _BatchBuilder:
    """Accumulates events into columns and hands out Arrow batches of bounded size."""

    def __init__(self) -> None:
        self.total = 0
        self._reset()

    def _reset(self) -> None:
        self.cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}

    def add(self, ev: Event) -> pa.RecordBatch | None:
        c = self.cols
        c["account_id"].append(ev.account_id)
        c["ts"].append(ev.ts)
        c["prompt"].append(ev.prompt)
        c["conversation_id"].append(ev.conversation_id)
        c["model"].append(ev.model)
        c["max_tokens"].append(ev.max_tokens)
        c["ip"].append(ev.ip)
        c["user_agent"].append(ev.user_agent)
        c["system"].append(ev.system)
        c["seq"].append(self.total)
        self.total += 1
        return self.flush() if len(c["seq"]) >= _BATCH_ROWS else None

    def flush(self) -> pa.RecordBatch:
        batch = pa.RecordBatch.from_pydict(self.cols, schema=SCHEMA)
        self._reset()
        return batch


def _records_to_batches(
    records: Iterable[Any], source: str, on_error: OnError, stats: ReadStats, first_line: int = 1
) -> Iterator[pa.RecordBatch]:
    builder = _BatchBuilder()
    for line, rec in enumerate(records, start=first_line):
        if isinstance(rec, EventError):  # a decoding error from the line reader
            error: EventError | None = rec
        else:
            try:
                batch = builder.add(parse_event(rec, source=source, line=line))
                stats.n_read += 1
                if batch is not None:
                    yield batch
                continue
            except EventError as exc:
                error = exc
        if on_error == "raise":
            raise error
        stats.skip(error)
    yield builder.flush()


# --------------------------------------------------------------------------- files


def _jsonl_records(path: Path) -> Iterator[Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    source = str(path)
    with opener(path, "rb") as fh:  # type: ignore[operator]
        for line_no, raw in enumerate(io.BufferedReader(fh, buffer_size=1 << 20), start=1):
            if not raw.strip():
                yield EventError(source, line_no, None, "empty line")
                continue
            try:
                yield orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield EventError(source, line_no, None, f"not valid JSON ({exc})")


def _parquet_records(path: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    missing = {"account_id", "ts", "prompt"} - set(pf.schema_arrow.names)
    if missing:
        raise EventError(str(path), None, sorted(missing)[0], "required column is missing")
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
        ts_col = batch.column("ts")
        if pa.types.is_timestamp(ts_col.type):  # native timestamps: make them epoch seconds
            unit = ts_col.type.unit
            scale = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
            ints = ts_col.cast(pa.int64()).to_numpy(zero_copy_only=False)
            tz = ts_col.type.tz
            if tz is None:
                # A naive timestamp column is ambiguous; treat as UTC (Parquet's own convention
                # for isAdjustedToUTC=false is local time, but we have no zone to apply).
                pass
            secs = pa.array(ints / scale)
            batch = batch.set_column(batch.schema.get_field_index("ts"), "ts", secs)
        yield from batch.to_pylist()


def iter_events(
    path: str | Path, *, on_error: OnError = "raise", stats: ReadStats | None = None
) -> Iterator[Event]:
    """Stream validated events from one file (``.jsonl``, ``.jsonl.gz``, ``.parquet``)."""
    p = Path(path)
    stats = stats if stats is not None else ReadStats()
    for batch in _file_batches(p, on_error, stats):
        for rec in batch.to_pylist():
            rec.pop("seq")
            yield Event(**rec)


def _file_batches(path: Path, on_error: OnError, stats: ReadStats) -> Iterator[pa.RecordBatch]:
    if not path.exists():
        raise EventError(str(path), None, None, "file not found")
    name = path.name.lower()
    if name.endswith(".parquet"):
        records: Iterator[Any] = _parquet_records(path)
    elif name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson", ".ndjson.gz")):
        records = _jsonl_records(path)
    else:
        raise EventError(
            str(path), None, None, "unknown file type (expected .jsonl, .jsonl.gz or .parquet)"
        )
    yield from _records_to_batches(records, str(path), on_error, stats)


def read_events(
    paths: str | Path | Sequence[str | Path], *, on_error: OnError = "raise"
) -> EventTable:
    """Read one or more event files into an :class:`EventTable` (sorted by account, time).

    Records are parsed in bounded batches straight into Arrow columns, so memory stays close
    to the size of the text itself. With ``on_error="skip"`` bad records are skipped and
    counted in ``table.stats``; otherwise the first bad record raises :class:`EventError`.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    stats = ReadStats()
    batches: list[pa.RecordBatch] = []
    offset = 0
    for path in paths:
        for batch in _file_batches(Path(path), on_error, stats):
            if batch.num_rows:  # keep arrival order unique across files
                seq = pc.add(batch.column("seq"), offset)
                batch = batch.set_column(batch.schema.get_field_index("seq"), "seq", seq)
                batches.append(batch)
        offset = stats.n_read
    if not batches:
        batches = [pa.RecordBatch.from_pylist([], schema=SCHEMA)]
    return EventTable._sorted(batches, stats)


def write_events(events: Iterable[Event | Mapping[str, Any]], path: str | Path) -> int:
    """Write events as contract JSON Lines (gzip when the name ends in .gz); returns the count."""
    p = Path(path)
    opener = gzip.open if p.name.endswith(".gz") else open
    n = 0
    with opener(p, "wb") as fh:  # type: ignore[operator]
        for ev in events:
            rec = ev.to_record() if isinstance(ev, Event) else dict(ev)
            fh.write(orjson.dumps(rec) + b"\n")
            n += 1
    return n
