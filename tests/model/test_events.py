"""The event reader: formats, time zones, every error path, ordering and round trips."""

from __future__ import annotations

import dataclasses
import gzip
import math
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.events import (
    Event,
    EventError,
    EventTable,
    ReadStats,
    format_ts,
    iter_events,
    parse_event,
    parse_ts,
    read_events,
    write_events,
)

T0 = datetime(2026, 4, 3, 12, 0, tzinfo=UTC).timestamp()  # 2026-04-03T12:00:00Z


def rec(account: str = "a-1", ts: Any = "2026-04-03T12:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"account_id": account, "ts": ts, "prompt": f"hello from {account}", **extra}


def write_lines(path: Path, lines: list[Any]) -> Path:
    """Write dicts as JSON and strings verbatim, one per line (gzip for .gz)."""
    data = b"".join(
        (line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n" for line in lines
    )
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    names = list(dict.fromkeys(k for r in records for k in r))  # every field of any record
    pq.write_table(pa.table({k: [r.get(k) for r in records] for k in names}), path)
    return path


def as_records(table: EventTable) -> list[dict[str, Any]]:
    return table.table.drop(["seq"]).to_pylist()


# --------------------------------------------------------------------------- formats

RECORDS = [
    rec("b", "2026-04-03T12:00:02Z", model="m-1", max_tokens=256, ip="10.0.0.0/24"),
    rec("a", "2026-04-03T12:00:01Z", conversation_id="c-1", user_agent="sdk/1", system="be brief"),
    rec("a", "2026-04-03T12:00:00Z"),
]


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz", "events.parquet"])
def test_each_format_reads_the_same_table(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, RECORDS)
    else:
        write_lines(path, RECORDS)

    table = read_events(path)

    assert len(table) == 3
    assert table.stats.n_read == 3 and table.stats.n_skipped == 0
    assert table.account_ids == ["a", "b"]
    rows = as_records(table)
    assert [r["ts"] for r in rows] == [T0, T0 + 1, T0 + 2]
    assert rows[1]["system"] == "be brief" and rows[1]["conversation_id"] == "c-1"
    assert rows[2]["max_tokens"] == 256 and rows[2]["model"] == "m-1"
    assert rows[0]["model"] is None and rows[0]["max_tokens"] is None


def test_parquet_native_timestamp_column_with_a_zone(tmp_path: Path) -> None:
    berlin = pa.array([0, 1_500], type=pa.int64()).cast(pa.timestamp("ms", tz="Europe/Berlin"))
    table = pa.table({"account_id": ["a", "a"], "ts": berlin, "prompt": ["p", "q"]})
    pq.write_table(table, tmp_path / "e.parquet")

    events = read_events(tmp_path / "e.parquet")

    # Arrow stores UTC ticks whatever the display zone: epoch 0 and 1.5 s.
    assert as_records(events)[0]["ts"] == 0.0
    assert as_records(events)[1]["ts"] == 1.5


def test_parquet_from_pandas_with_tz_aware_datetimes(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "account_id": ["a", "b"],
            "ts": pd.to_datetime(
                ["2026-04-03 14:00:00.000", "2026-04-03 14:00:00.250"]
            ).tz_localize(
                "Europe/Berlin"  # UTC+2 in April
            ),
            "prompt": ["p", "q"],
        }
    )
    df.to_parquet(tmp_path / "e.parquet")

    assert [r["ts"] for r in as_records(read_events(tmp_path / "e.parquet"))] == [T0, T0 + 0.25]


def test_parquet_naive_timestamp_column_is_taken_as_utc(tmp_path: Path) -> None:
    ts = pa.array([datetime(2026, 4, 3, 12, 0)], type=pa.timestamp("us"))
    pq.write_table(
        pa.table({"account_id": ["a"], "ts": ts, "prompt": ["p"]}), tmp_path / "e.parquet"
    )
    assert as_records(read_events(tmp_path / "e.parquet"))[0]["ts"] == T0


def test_parquet_string_ts_column_and_unknown_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "account_id": ["a", "a"],
            "ts": ["2026-04-03T14:00:00+02:00", "2026-04-03T12:00:01Z"],
            "prompt": ["p", "q"],
            "tags": [["x"], ["y", "z"]],  # unknown (and nested): ignored
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")

    rows = as_records(read_events(tmp_path / "e.parquet"))

    assert [r["ts"] for r in rows] == [T0, T0 + 1]
    assert "tags" not in rows[0]


def test_parquet_missing_required_column_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"account_id": ["a"], "ts": [T0]}), path)

    with pytest.raises(EventError) as err:
        read_events(path)

    assert err.value.field == "prompt"
    assert str(path) in str(err.value) and "'prompt'" in str(err.value)
    assert "required column is missing" in str(err.value)


def test_parquet_bad_value_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(
        pa.table({"account_id": ["a", "b"], "ts": [T0, None], "prompt": ["p", "q"]}), path
    )

    with pytest.raises(EventError) as err:
        read_events(path)

    assert (err.value.line, err.value.field) == (2, "ts")
    assert str(err.value) == f"{path}: row 2: field 'ts': required field is missing"


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    path.write_text("account_id,ts,prompt\n")
    with pytest.raises(EventError, match="not a readable Parquet file") as err:
        read_events(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- time zones


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-04-03T12:00:00Z", T0),
        ("2026-04-03T12:00:00z", T0),
        ("2026-04-03T14:00:00+02:00", T0),
        ("2026-04-03T06:30:00-05:30", T0),
        ("2026-04-03 12:00:00+00:00", T0),
        ("2026-04-03T12:00:00.250Z", T0 + 0.25),
        ("2026-04-03T12:00:00.123456789Z", T0 + 0.123456),  # nanoseconds: truncated to µs
        ("2026-04-03T13:00:00.5+01:00", T0 + 0.5),
        (int(T0), T0),
        (T0 + 0.75, T0 + 0.75),
        (0, 0.0),
    ],
)
def test_time_zones_and_epoch_seconds(tmp_path: Path, ts: Any, expected: float) -> None:
    path = write_lines(tmp_path / "e.jsonl", [rec(ts=ts)])
    got = as_records(read_events(path))[0]["ts"]
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        ("2026-04-03T12:00:00", "no UTC offset"),
        ("2026-04-03", "no UTC offset"),
        ("yesterday", "not an RFC 3339 timestamp"),
        (True, "boolean"),
        ([2026], "got list"),
        (1_775_000_000_000, "outside years 1677-2262"),  # epoch milliseconds
    ],
)
def test_bad_times_are_rejected(ts: Any, message: str) -> None:
    with pytest.raises(EventError, match=message) as err:
        parse_event(rec(ts=ts), source="s.jsonl", line=7)
    assert (err.value.source, err.value.line, err.value.field) == ("s.jsonl", 7, "ts")


def test_format_ts_round_trips_to_the_microsecond() -> None:
    for ts in (T0, T0 + 0.25, T0 + 0.123456, -1.5):
        assert parse_ts(format_ts(ts)) == pytest.approx(ts, abs=1e-6)
    assert format_ts(T0) == "2026-04-03T12:00:00Z"
    assert format_ts(T0 + 0.25) == "2026-04-03T12:00:00.250Z"


# --------------------------------------------------------------------------- errors

BAD_LINES: list[tuple[str, Any, str | None, str]] = [
    ("not json", "{not json", None, "not valid JSON"),
    ("empty line", "", None, "empty line"),
    ("blank line", "   ", None, "empty line"),
    ("array", [1, 2], None, "expected a JSON object, got list"),
    ("string", '"text"', None, "expected a JSON object, got str"),
    ("no account", {"ts": T0, "prompt": "p"}, "account_id", "required field is missing"),
    ("int account", rec(account=17), "account_id", "expected a string, got int"),  # type: ignore[arg-type]
    ("empty account", rec(account=""), "account_id", "must be 1-128 characters"),
    ("long account", rec(account="x" * 129), "account_id", "must be 1-128 characters, got 129"),
    ("no ts", {"account_id": "a", "prompt": "p"}, "ts", "required field is missing"),
    ("null ts", rec(ts=None), "ts", "required field is missing"),
    ("text ts", rec(ts="soon"), "ts", "not an RFC 3339 timestamp"),
    ("naive ts", rec(ts="2026-04-03T12:00:00"), "ts", "no UTC offset"),
    ("no prompt", {"account_id": "a", "ts": T0}, "prompt", "required field is missing"),
    ("int prompt", rec(prompt=3), "prompt", "expected a string, got int"),
    ("list prompt", rec(prompt=["a"]), "prompt", "expected a string, got list"),
    ("text max_tokens", rec(max_tokens="12"), "max_tokens", "expected an integer, got '12'"),
    ("negative max_tokens", rec(max_tokens=-1), "max_tokens", "must be between 0 and"),
    ("bool max_tokens", rec(max_tokens=True), "max_tokens", "expected an integer, got True"),
    ("fractional max_tokens", rec(max_tokens=3.5), "max_tokens", "expected an integer, got 3.5"),
    ("huge max_tokens", rec(max_tokens=1e30), "max_tokens", "must be between 0 and"),
    ("int model", rec(model=3), "model", "expected a string, got int"),
    ("dict ip", rec(ip={"v4": "1.2.3.4"}), "ip", "expected a string, got dict"),
    ("bool system", rec(system=False), "system", "expected a string, got bool"),
    ("int conversation", rec(conversation_id=9), "conversation_id", "expected a string, got int"),
    ("list user_agent", rec(user_agent=["x"]), "user_agent", "expected a string, got list"),
]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [case[1:] for case in BAD_LINES],
    ids=[case[0] for case in BAD_LINES],
)
def test_a_bad_record_names_file_line_and_field(
    tmp_path: Path, line: Any, field: str | None, message: str
) -> None:
    path = write_lines(tmp_path / "e.jsonl", [rec("good"), line, rec("also-good")])

    with pytest.raises(EventError) as err:
        read_events(path)

    assert (err.value.source, err.value.line, err.value.field) == (str(path), 2, field)
    text = str(err.value)
    assert text.startswith(f"{path}:2: ")
    assert message in text
    if field is not None:
        assert f"field '{field}'" in text


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [case[1:] for case in BAD_LINES],
    ids=[case[0] for case in BAD_LINES],
)
def test_skip_mode_skips_counts_and_keeps_the_good_records(
    tmp_path: Path, line: Any, field: str | None, message: str
) -> None:
    path = write_lines(tmp_path / "e.jsonl", [rec("good"), line, rec("also-good")])

    table = read_events(path, on_error="skip")

    assert table.account_ids == ["also-good", "good"]
    assert (table.stats.n_read, table.stats.n_skipped) == (2, 1)
    assert message in table.stats.examples[0]
    assert "skipped 1 bad records" in table.stats.summary()


def test_skip_mode_counts_every_bad_record_and_keeps_a_few_examples(tmp_path: Path) -> None:
    lines = [rec("ok", ts=T0 + i) if i % 3 else rec(prompt=i) for i in range(30)]
    table = read_events(write_lines(tmp_path / "e.jsonl", lines), on_error="skip")
    assert (table.stats.n_read, table.stats.n_skipped) == (20, 10)
    assert len(table.stats.examples) == 5
    assert table.stats.examples[0].endswith(":1: field 'prompt': expected a string, got int")


def test_max_tokens_written_as_a_whole_float_is_an_integer() -> None:
    assert parse_event(rec(max_tokens=512.0)).max_tokens == 512
    assert parse_event(rec(max_tokens=0)).max_tokens == 0


def test_unknown_fields_are_ignored(tmp_path: Path) -> None:
    line = rec(request_id="r-1", metadata={"nested": [1, 2]}, score=0.5, max_tokens=None)
    table = read_events(write_lines(tmp_path / "e.jsonl", [line]))
    assert len(table) == 1 and "request_id" not in table.table.column_names


def test_unknown_file_extension(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("account_id,ts,prompt\n")
    with pytest.raises(EventError, match="unknown file type") as err:
        read_events(path)
    assert str(err.value).startswith(str(path))


def test_missing_file_is_reported_before_reading_the_others(tmp_path: Path) -> None:
    good = write_lines(tmp_path / "good.jsonl", [rec()])
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(EventError, match="file not found") as err:
        read_events([good, missing], on_error="skip")  # skip covers records, not files
    assert err.value.source == str(missing)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(rec()) + b"\n" for _ in range(50)))[:60])
    with pytest.raises(EventError, match="unreadable") as err:
        read_events(path)
    assert err.value.source == str(path)


def test_upper_case_gz_extension_is_decompressed(tmp_path: Path) -> None:
    path = tmp_path / "E.JSONL.GZ"
    path.write_bytes(gzip.compress(orjson.dumps(rec()) + b"\n"))
    assert len(read_events(path)) == 1


def test_a_utf8_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(rec()) + b"\n")
    assert len(read_events(path)) == 1


def test_records_from_python_with_invalid_unicode_are_bad_records() -> None:
    with pytest.raises(EventError, match="not valid Unicode") as err:
        EventTable.from_records([rec(), rec(prompt="half a pair \ud800")])
    assert (err.value.line, err.value.field) == (2, "prompt")


def test_event_error_survives_pickling() -> None:
    err = EventError("f.parquet", 3, "ts", "bad", unit="row")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) == "f.parquet: row 3: field 'ts': bad"
    assert (copy.source, copy.line, copy.field, copy.unit) == ("f.parquet", 3, "ts", "row")


# --------------------------------------------------------------------------- ordering


def test_accounts_come_out_grouped_and_time_ordered(tmp_path: Path) -> None:
    lines = [
        rec("b", T0 + 5, prompt="b2"),
        rec("a", T0 + 3, prompt="a2"),
        rec("c", T0 + 0, prompt="c1"),
        rec("b", T0 + 1, prompt="b1"),
        rec("a", T0 + 1, prompt="a1"),
        rec("b", T0 + 9, prompt="b3"),
    ]
    table = read_events(write_lines(tmp_path / "e.jsonl", lines))

    assert table.account_ids == ["a", "b", "c"] and table.n_accounts == 3
    got = {acc.account_id: acc.prompts for acc in table.accounts()}
    assert got == {"a": ["a1", "a2"], "b": ["b1", "b2", "b3"], "c": ["c1"]}
    for acc in table.accounts():
        assert np.all(np.diff(acc.ts) >= 0)


def test_equal_times_keep_input_order_across_files(tmp_path: Path) -> None:
    first = write_lines(tmp_path / "1.jsonl", [rec("a", T0, prompt=f"f1-{i}") for i in range(3)])
    second = write_lines(tmp_path / "2.jsonl", [rec("a", T0, prompt=f"f2-{i}") for i in range(3)])
    write_parquet(
        tmp_path / "3.parquet", [rec("a", T0, prompt="f3-0"), rec("a", T0 - 1, prompt="early")]
    )

    table = read_events([first, second, tmp_path / "3.parquet"])

    assert table.account("a").prompts == [
        "early",
        *[f"f1-{i}" for i in range(3)],
        *[f"f2-{i}" for i in range(3)],
        "f3-0",
    ]
    assert table.stats.n_read == 8


def test_ordering_holds_across_many_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 25_000  # several internal batches
    accounts = rng.integers(0, 300, n)
    times = rng.integers(0, 2_000, n)  # many equal times within an account
    lines = [
        rec(f"acct-{a:03d}", int(t), prompt=str(i))
        for i, (a, t) in enumerate(zip(accounts, times, strict=True))
    ]
    table = read_events(write_lines(tmp_path / "e.jsonl", lines))

    expected = sorted(range(n), key=lambda i: (f"acct-{accounts[i]:03d}", times[i], i))
    assert table.table.column("prompt").to_pylist() == [str(i) for i in expected]


def test_account_view_and_unknown_account(tmp_path: Path) -> None:
    lines = [rec("a", T0 + 1, max_tokens=64, model="m"), rec("a", T0), rec("b", T0)]
    table = read_events(write_lines(tmp_path / "e.jsonl", lines))

    acc = table.account("a")
    assert len(acc) == 2 and acc.ts.tolist() == [T0, T0 + 1]
    assert math.isnan(acc.max_tokens[0]) and acc.max_tokens[1] == 64
    assert acc.model == [None, "m"]
    assert acc.head(1).prompts == ["hello from a"]
    with pytest.raises(KeyError, match="nobody"):
        table.account("nobody")


def test_to_pandas_gives_utc_datetimes(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    table = read_events(write_lines(tmp_path / "e.jsonl", RECORDS))

    df = table.to_pandas()

    assert list(df["account_id"]) == ["a", "a", "b"]
    assert "seq" not in df.columns
    assert str(df["ts"].dt.tz) == "UTC"
    assert df["ts"].iloc[0].isoformat() == "2026-04-03T12:00:00+00:00"


def test_empty_file_gives_an_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"")
    table = read_events(path)
    assert len(table) == 0 and table.n_accounts == 0 and list(table.accounts()) == []


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_then_read_round_trips(tmp_path: Path, name: str) -> None:
    events = [
        Event("a", T0 + 0.123456, "p1", conversation_id="c", model="m", max_tokens=5, ip="ip"),
        Event("a", T0, "p0", user_agent="ua", system="sys"),
        Event("b", T0 + 0.25, "naïve prompt ✓ with unicode"),
    ]
    assert write_events(events, tmp_path / name) == 3

    table = read_events(tmp_path / name)

    got = [ev for acc in table.accounts() for ev in acc.events()]
    want = sorted(events, key=lambda e: (e.account_id, e.ts))
    assert [e.account_id for e in got] == [e.account_id for e in want]
    for g, w in zip(got, want, strict=True):
        assert g.ts == pytest.approx(w.ts, abs=1e-6)
        assert g == dataclasses.replace(w, ts=g.ts)


def test_write_events_accepts_plain_records(tmp_path: Path) -> None:
    write_events([rec("a", T0, extra="kept in the file")], tmp_path / "e.jsonl")
    assert orjson.loads((tmp_path / "e.jsonl").read_bytes())["extra"] == "kept in the file"
    assert len(read_events(tmp_path / "e.jsonl")) == 1


def test_iter_events_streams_with_stats(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "e.jsonl", [rec("z", T0 + 1), "oops", rec("y", T0)])
    stats = ReadStats()

    events = list(iter_events(path, on_error="skip", stats=stats))

    assert [e.account_id for e in events] == ["z", "y"]  # file order: no sorting
    assert (stats.n_read, stats.n_skipped) == (2, 1)
    assert events[0] == Event("z", T0 + 1, "hello from z")


def test_from_events_matches_read_events(tmp_path: Path) -> None:
    events = [parse_event(r) for r in RECORDS]
    path = write_lines(tmp_path / "e.jsonl", RECORDS)
    assert as_records(EventTable.from_events(events)) == as_records(read_events(path))
