"""The command line: help, exit codes, one-line errors naming file, line and field."""

import json
import subprocess
import sys

import pytest

from distillwatch.cli import main

COMMANDS = ["simulate", "train", "score", "evaluate", "fleets", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: distillwatch " + command in capsys.readouterr().out


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "distillwatch.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "simulate" in out.stdout


def _events(tmp_path, bad_line: str | None = None):
    lines = [
        json.dumps({"account_id": f"a{i % 3}", "ts": 1.75e9 + i * 60, "prompt": f"hello {i}"})
        for i in range(9)
    ]
    if bad_line is not None:
        lines.insert(4, bad_line)
    p = tmp_path / "events.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ('{"account_id": "x", "ts": "yesterday", "prompt": "p"}', "ts"),
        ('{"account_id": "x", "ts": 1}', "prompt"),
        ("not json", None),
    ],
)
def test_malformed_line_stops_with_one_line_naming_it(
    tmp_path, tiny_model_dir, capsys, bad, field
) -> None:
    events = _events(tmp_path, bad)
    code = main(
        [
            "score",
            "--events",
            str(events),
            "--out",
            str(tmp_path / "s.jsonl"),
            "--model",
            str(tiny_model_dir),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert f"{events}:5" in err and (field is None or f"'{field}'" in err)
    assert not (tmp_path / "s.jsonl").exists()


def test_skip_mode_finishes_and_reports(tmp_path, tiny_model_dir, capsys) -> None:
    events = _events(tmp_path, '{"account_id": "x", "ts": "yesterday", "prompt": "p"}')
    out = tmp_path / "s.jsonl"
    code = main(
        [
            "score",
            "--events",
            str(events),
            "--out",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--on-error",
            "skip",
            "--quiet",
        ]
    )
    assert code == 0
    assert "skipped 1 bad events" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["account_id"] for r in rows) == ["a0", "a1", "a2"]
    assert sum(r["n_events"] for r in rows) == 9


def test_evaluate_writes_metrics(tmp_path, sim_dir, tiny_model_dir) -> None:
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--events",
            str(sim_dir / "events.jsonl"),
            "--labels",
            str(sim_dir / "labels.jsonl"),
            "--out",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--quiet",
        ]
    )
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"auroc", "pr_auc", "recall_at_1pct_fpr", "recall_at_0.1pct_fpr", "per_kind"} <= set(m)


def test_missing_file_and_bad_model(tmp_path, tiny_model_dir, capsys) -> None:
    assert (
        main(
            [
                "score",
                "--events",
                str(tmp_path / "none.jsonl"),
                "--out",
                str(tmp_path / "o"),
                "--model",
                str(tiny_model_dir),
            ]
        )
        == 2
    )
    assert "file not found" in capsys.readouterr().err
    ev = _events(tmp_path)
    assert (
        main(["score", "--events", str(ev), "--out", str(tmp_path / "o"), "--model", str(tmp_path)])
        == 2
    )


def test_simulate_writes_contract_files(tmp_path) -> None:
    assert (
        main(["simulate", "--accounts", "30", "--seed", "1", "--out", str(tmp_path), "--quiet"])
        == 0
    )
    assert (tmp_path / "events.jsonl").stat().st_size > 0 and (tmp_path / "labels.jsonl").exists()
    assert main(["simulate", "--accounts", "0", "--seed", "1", "--out", str(tmp_path)]) == 2
