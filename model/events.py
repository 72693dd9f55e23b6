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

import codecs
import contextlib
import gzip
import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

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
_BATCH_ROWS = 10_000

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
    """A record that breaks the event format; names where it is and what is wrong.

    ``line`` is the 1-based line of a JSON Lines file or, with ``unit="row"``, the 1-based
    row of a Parquet file; ``None`` for a whole-file problem (missing file, missing column).
    """

    def __init__(
        self,
        source: str,
        line: int | None,
        field_name: str | None,
        message: str,
        *,
        unit: Literal["line", "row"] = "line",
    ):
        self.source = source
        self.line = line
        self.field = field_name
        self.message = message
        self.unit = unit
        if line is None:
            where = source
        elif unit == "row":
            where = f"{source}: row {line}"
        else:
            where = f"{source}:{line}"
        what = f"field '{field_name}': " if field_name else ""
        super().__init__(f"{where}: {what}{message}")

    def __reduce__(self) -> tuple[Any, ...]:  # keeps the error picklable (worker processes)
        args = (self.source, self.line, self.field, self.message)
        return (_rebuild_error, (*args, self.unit))


def _rebuild_error(
    source: str, line: int | None, field_name: str | None, message: str, unit: Any
) -> EventError:
    return EventError(source, line, field_name, message, unit=unit)


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

# pandas (and numpy datetime64[ns]) hold ±2**63 ns around the epoch: years 1677-2262. A value
# beyond that is almost always milliseconds or microseconds sent as seconds.
_MIN_TS = -9_223_372_036.0
_MAX_TS = 9_223_372_036.0
_MAX_INT64 = 2**63 - 1

#: One validated event as a tuple in the column order of :data:`SCHEMA` (without ``seq``);
#: ``Event(*row)`` rebuilds the dataclass. Readers keep tuples, not objects, and turn a batch
#: of them into Arrow columns in one pass.
_Row = tuple[
    str, float, str, str | None, str | None, int | None, str | None, str | None, str | None
]


def parse_ts(value: Any) -> float:
    """RFC 3339 string (any offset; ``Z`` accepted) or epoch seconds → UTC epoch seconds.

    A string without an offset is rejected: a naive local time is ambiguous. So are times
    outside years 1677-2262 (epoch milliseconds sent as seconds land there).
    """
    if isinstance(value, str):
        try:  # the common case, "2026-04-03T12:00:00Z", parses as it is
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = _parse_ts_lenient(value)
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp has no UTC offset: {value!r} (add 'Z' or '+hh:mm')")
        ts = parsed.timestamp()
    elif isinstance(value, bool):
        raise ValueError("expected an RFC 3339 string or epoch seconds, got a boolean")
    elif isinstance(value, int | float):
        ts = float(value)
        if not math.isfinite(ts):
            raise ValueError(f"epoch seconds must be finite, got {value!r}")
    else:
        raise ValueError(
            f"expected an RFC 3339 string or epoch seconds, got {type(value).__name__}"
        )
    if not _MIN_TS <= ts <= _MAX_TS:
        raise ValueError(
            f"time {value!r} is outside years 1677-2262 (epoch milliseconds instead of seconds?)"
        )
    return ts


def _parse_ts_lenient(value: str) -> datetime:
    """What ``fromisoformat`` refuses as it is: surrounding spaces, a lower-case ``z``."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from None


def format_ts(ts: float) -> str:
    """UTC epoch seconds → RFC 3339 with ``Z``: milliseconds when needed, microseconds if finer.

    ``parse_ts(format_ts(t))`` gives ``t`` back to the microsecond.
    """
    dt = datetime.fromtimestamp(ts, tz=UTC)
    us = dt.microsecond
    if not us:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frac = f"{us // 1000:03d}" if us % 1000 == 0 else f"{us:06d}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


def _validate(
    record: Any, source: str, line: int | None, unit: Literal["line", "row"] = "line"
) -> _Row:
    """Check one decoded record against the contract; the hot loop of every reader.

    Returns the event as a :data:`_Row` tuple or raises :class:`EventError` naming source,
    line and field.
    """
    if type(record) is not dict and not isinstance(record, Mapping):
        raise EventError(
            source, line, None, f"expected a JSON object, got {type(record).__name__}", unit=unit
        )
    get = record.get
    account_id = get("account_id")
    if not isinstance(account_id, str) or not 0 < len(account_id) <= MAX_ACCOUNT_ID_CHARS:
        if account_id is None:
            message = "required field is missing"
        elif not isinstance(account_id, str):
            message = f"expected a string, got {type(account_id).__name__}"
        else:
            message = f"must be 1-{MAX_ACCOUNT_ID_CHARS} characters, got {len(account_id)}"
        raise EventError(source, line, "account_id", message, unit=unit)
    raw_ts = get("ts")
    if raw_ts is None:
        raise EventError(source, line, "ts", "required field is missing", unit=unit)
    try:
        ts = parse_ts(raw_ts)
    except ValueError as exc:
        raise EventError(source, line, "ts", str(exc), unit=unit) from None
    prompt = get("prompt")
    if not isinstance(prompt, str):
        message = (
            "required field is missing"
            if prompt is None
            else f"expected a string, got {type(prompt).__name__}"
        )
        raise EventError(source, line, "prompt", message, unit=unit)
    conversation_id = get("conversation_id")
    model = get("model")
    ip = get("ip")
    user_agent = get("user_agent")
    system = get("system")
    if not (
        (conversation_id is None or type(conversation_id) is str)
        and (model is None or type(model) is str)
        and (ip is None or type(ip) is str)
        and (user_agent is None or type(user_agent) is str)
        and (system is None or type(system) is str)
    ):  # something other than a plain str: name the first field that is not a string at all
        for name in OPTIONAL_STR_FIELDS:
            value = get(name)
            if value is not None and not isinstance(value, str):
                raise EventError(
                    source, line, name, f"expected a string, got {type(value).__name__}", unit=unit
                )
    max_tokens = get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, float) and max_tokens.is_integer():
            max_tokens = int(max_tokens)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise EventError(
                source, line, "max_tokens", f"expected an integer, got {max_tokens!r}", unit=unit
            )
        if not 0 <= max_tokens <= _MAX_INT64:
            raise EventError(
                source,
                line,
                "max_tokens",
                f"must be between 0 and {_MAX_INT64}, got {max_tokens}",
                unit=unit,
            )
    return (account_id, ts, prompt, conversation_id, model, max_tokens, ip, user_agent, system)


def parse_event(record: Any, *, source: str = "<input>", line: int | None = None) -> Event:
    """Validate one decoded record against the contract; raise :class:`EventError` if it breaks it.

    Example::

        parse_event({"account_id": "a-1", "ts": "2026-04-03T12:00:00Z", "prompt": "hi"})
    """
    return Event(*_validate(record, source, line))


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
        self._index: dict[str, int] | None = None

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventTable:
        builder = _BatchBuilder()
        for ev in events:
            builder.add(
                (
                    ev.account_id,
                    ev.ts,
                    ev.prompt,
                    ev.conversation_id,
                    ev.model,
                    ev.max_tokens,
                    ev.ip,
                    ev.user_agent,
                    ev.system,
                )
            )
        return cls._sorted(builder.finish(), ReadStats(n_read=builder.total))

    @classmethod
    def from_records(
        cls, records: Iterable[Any], *, source: str = "<records>", on_error: OnError = "raise"
    ) -> EventTable:
        """Validate decoded records (dicts) into a table; line numbers count from 1."""
        stats = ReadStats()
        builder = _BatchBuilder()
        for row in _checked_rows(records, source, on_error, stats, check_text=True):
            builder.add(row)
        return cls._sorted(builder.finish(), stats)

    @classmethod
    def _sorted(cls, batches: list[pa.RecordBatch], stats: ReadStats) -> EventTable:
        """Sort ``batches`` into one table; empties the list so each column is freed early.

        Peak memory is the events once plus one copy of the largest column (the prompts),
        not two copies of everything.
        """
        table = pa.Table.from_batches(batches, schema=SCHEMA)
        batches.clear()
        if table.num_rows == 0:
            return cls(table.combine_chunks(), stats)
        # Rank the (few) distinct accounts once and sort integers, not strings: `seq` is
        # already arrival order and lexsort is stable, so (rank, ts) is all it needs.
        ids = table.column("account_id")
        distinct = pc.unique(ids)
        distinct = distinct.take(pc.sort_indices(distinct))
        rank = pc.index_in(ids, value_set=distinct).to_numpy()
        order = pa.array(np.lexsort((table.column("ts").to_numpy(), rank)))
        del ids, distinct, rank
        columns = table.columns
        del table
        for i in range(len(columns)):
            columns[i] = columns[i].combine_chunks()  # frees the batches' copy of the column
            pa.default_memory_pool().release_unused()
            columns[i] = pc.take(columns[i], order)
        return cls(pa.Table.from_arrays(columns, schema=SCHEMA), stats)

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
        """One account's events; ``KeyError`` if the table has none."""
        starts, ends, ids = self._account_bounds()
        if self._index is None:
            self._index = {a: i for i, a in enumerate(ids)}
        i = self._index.get(account_id)
        if i is None:
            raise KeyError(f"unknown account_id {account_id!r}")
        return self._account(account_id, int(starts[i]), int(ends[i]))

    def _account(self, account_id: str, start: int, end: int) -> AccountEvents:
        part = self.table.slice(start, end - start)
        max_tokens = part.column("max_tokens").to_numpy()
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


_ROW = pa.struct(list(SCHEMA)[:-1])  # a validated row: every field but `seq`


class _BatchBuilder:
    """Collects validated rows and turns them into Arrow batches of bounded size.

    ``seq`` (arrival order, the tie-break for equal times) runs on across everything added,
    so one builder fed several files keeps their order.
    """

    def __init__(self) -> None:
        self.total = 0
        self.batches: list[pa.RecordBatch] = []
        self._rows: list[_Row] = []

    def add(self, row: _Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= _BATCH_ROWS:
            self._flush()

    def finish(self) -> list[pa.RecordBatch]:
        """All batches so far (at least one, possibly empty); the builder starts over."""
        if self._rows or not self.batches:
            self._flush()
        batches, self.batches = self.batches, []
        return batches

    def _flush(self) -> None:
        rows, self._rows = self._rows, []
        n = len(rows)
        # One C pass turns the tuples into columns. Copying each column once more leaves it in
        # a buffer of exactly its size: the builder's spare capacity would otherwise stay
        # resident (mimalloc shrinks in place) and add a third to the peak of a large read.
        arrays = [pa.concat_arrays([child]) for child in pa.array(rows, type=_ROW).flatten()]
        arrays.append(pa.array(np.arange(self.total, self.total + n, dtype=np.int64)))
        self.total += n
        self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=SCHEMA))


def _checked_rows(
    records: Iterable[Any],
    source: str,
    on_error: OnError,
    stats: ReadStats,
    unit: Literal["line", "row"] = "line",
    check_text: bool = False,
) -> Iterator[_Row]:
    """Validate records numbered from 1; raise on the first bad one or skip and count it.

    A record may already be an :class:`EventError` (a line that was not even JSON).
    ``check_text`` also refuses strings that are not valid Unicode, which only records built
    in Python (not decoded from a file) can hold.
    """
    for line, rec in enumerate(records, start=1):
        if isinstance(rec, EventError):
            error = rec
        else:
            try:
                row = _validate(rec, source, line, unit)
                if check_text:
                    _check_text(row, source, line)
            except EventError as exc:
                error = exc
            else:
                stats.n_read += 1
                yield row
                continue
        if on_error == "raise":
            raise error
        stats.skip(error)


def _check_text(row: _Row, source: str, line: int) -> None:
    """Raise if a string of ``row`` cannot be stored as UTF-8 (a lone surrogate, say)."""
    for name, value in zip(SCHEMA.names, row, strict=False):
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                raise EventError(
                    source, line, name, f"not valid Unicode text ({exc.reason})"
                ) from None


# --------------------------------------------------------------------------- files


def _open_binary(path: Path) -> BinaryIO:
    """The bytes of a file, decompressed when its name ends in ``.gz``; the caller closes it."""
    if path.name.lower().endswith(".gz"):
        return cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb", buffering=1 << 20)


def _jsonl_records(path: Path) -> Iterator[Any]:
    """Decoded JSON values of a JSON Lines file, one per line; a bad line yields an EventError."""
    source = str(path)
    line_no = 0
    with _open_binary(path) as lines:
        try:
            for line_no, raw in enumerate(lines, start=1):
                try:
                    yield orjson.loads(raw)
                except orjson.JSONDecodeError as exc:  # the rare path: find out what is wrong
                    if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                        raw = raw[len(codecs.BOM_UTF8) :]
                        with contextlib.suppress(orjson.JSONDecodeError):
                            yield orjson.loads(raw)
                            continue
                    if not raw.strip():
                        yield EventError(source, line_no, None, "empty line")
                    else:
                        yield EventError(source, line_no, None, f"not valid JSON ({exc})")
        except (OSError, EOFError, zlib.error) as exc:  # corrupt or truncated gzip data
            raise EventError(
                source, line_no + 1, None, f"the file is unreadable from here on ({exc})"
            ) from exc


def _parquet_records(path: Path) -> Iterator[Any]:
    """Rows of a Parquet file as dicts; a native timestamp ``ts`` column becomes epoch seconds.

    A timestamp column without a time zone is taken as UTC (the only zone it could mean for
    data that crossed machines); one with a zone is converted from it.
    """
    import pyarrow.parquet as pq

    source = str(path)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise EventError(source, None, None, f"not a readable Parquet file ({exc})") from exc
    names = set(pf.schema_arrow.names)
    for name in ("account_id", "ts", "prompt"):
        if name not in names:
            raise EventError(source, None, name, "required column is missing")
    wanted = [name for name in SCHEMA.names if name in names and name != "seq"]
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=wanted):  # others: ignored
        ts_col = batch.column("ts")
        if pa.types.is_timestamp(ts_col.type):  # stored as UTC ticks whatever the zone
            scale = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[ts_col.type.unit]
            secs = pc.divide(ts_col.cast(pa.int64()).cast(pa.float64()), scale)  # nulls stay null
            batch = batch.set_column(batch.schema.get_field_index("ts"), "ts", secs)
        yield from batch.to_pylist()


def _check_path(path: Path) -> Literal["jsonl", "parquet"]:
    """The format of an event file, or an EventError before anything is read."""
    if not path.is_file():
        raise EventError(str(path), None, None, "file not found")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    raise EventError(
        str(path), None, None, "unknown file type (expected .jsonl, .jsonl.gz or .parquet)"
    )


def _file_rows(path: Path, on_error: OnError, stats: ReadStats) -> Iterator[_Row]:
    if _check_path(path) == "parquet":
        return _checked_rows(_parquet_records(path), str(path), on_error, stats, unit="row")
    return _checked_rows(_jsonl_records(path), str(path), on_error, stats)


def iter_events(
    path: str | Path, *, on_error: OnError = "raise", stats: ReadStats | None = None
) -> Iterator[Event]:
    """Stream validated events from one file (``.jsonl``, ``.jsonl.gz``, ``.parquet``)."""
    stats = stats if stats is not None else ReadStats()
    for row in _file_rows(Path(path), on_error, stats):
        yield Event(*row)


def read_events(
    paths: str | Path | Sequence[str | Path], *, on_error: OnError = "raise"
) -> EventTable:
    """Read one or more event files into an :class:`EventTable` (sorted by account, time).

    Records are parsed in bounded batches straight into Arrow columns, so memory stays close
    to the size of the text itself. With ``on_error="skip"`` bad records are skipped and
    counted in ``table.stats``; otherwise the first bad record raises :class:`EventError`.
    Events with equal times keep their input order (files in the order given).
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    for path in paths:  # a typo in the last path should not wait for a long read of the first
        _check_path(Path(path))
    stats = ReadStats()
    builder = _BatchBuilder()
    for path in paths:
        for row in _file_rows(Path(path), on_error, stats):
            builder.add(row)
    return EventTable._sorted(builder.finish(), stats)


def write_events(events: Iterable[Event | Mapping[str, Any]], path: str | Path) -> int:
    """Write events as contract JSON Lines (gzip when the name ends in .gz); returns the count."""
    p = Path(path)
    n = 0
    with gzip.open(p, "wb") if p.name.lower().endswith(".gz") else open(p, "wb") as fh:
        for ev in events:
            rec = ev.to_record() if isinstance(ev, Event) else dict(ev)
            fh.write(orjson.dumps(rec) + b"\n")
            n += 1
    return n
