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


def _evaluate(sim_dir, model_dir, out, *extra: str) -> int:
    return main(
        [
            "evaluate",
            "--events",
            str(sim_dir / "events.jsonl"),
            "--labels",
            str(sim_dir / "labels.jsonl"),
            "--out",
            str(out),
            "--model",
            str(model_dir),
            "--quiet",
            *extra,
        ]
    )


def test_evaluate_writes_metrics_report_and_plots(tmp_path, sim_dir, tiny_model_dir, capsys):
    out = tmp_path / "eval"
    assert _evaluate(sim_dir, tiny_model_dir, out) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"auroc", "pr_auc", "recall_at_1pct_fpr", "recall_at_0.1pct_fpr", "per_kind"} <= set(m)
    assert set(m["detected_within"]) == {"10", "30", "100"}
    assert m["evaluated_on"]["baseline_fit"] is None
    assert "baselines" not in m and "dilution" not in m
    for name in ("report.html", "roc.png", "pr.png", "scores_by_kind.png", "time_to_detection.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].startswith("distillwatch ")  # the summary table
    assert f"wrote {out / 'report.html'}" in printed


def test_evaluate_no_report_writes_metrics_only(tmp_path, sim_dir, tiny_model_dir) -> None:
    out = tmp_path / "eval"
    assert _evaluate(sim_dir, tiny_model_dir, out, "--no-report") == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_evaluate_baselines_compare_and_dilution(tmp_path, sim_dir, tiny_model_dir, capsys):
    out = tmp_path / "eval"
    extra = ["--baselines", "--compare", str(tiny_model_dir)]
    extra += ["--dilution", "--dilution-accounts", "2"]
    assert _evaluate(sim_dir, tiny_model_dir, out, *extra) == 0
    m = json.loads((out / "metrics.json").read_text())
    names = {"rules", "logistic", "prada", "mmd_window"}
    assert set(m["baselines"]) == names
    for figures in m["baselines"].values():
        assert {"auroc", "recall_at_1pct_fpr", "detected_within", "per_kind"} <= set(figures)
    # no separate fitting data: baselines fit on one campaign-disjoint part, all judged on the other
    split = m["evaluated_on"]["baseline_fit"]
    n_labelled = sum(1 for _ in (sim_dir / "labels.jsonl").open())
    assert split["fit_accounts"] + m["evaluated_on"]["accounts"] == n_labelled
    assert m["baselines"]["rules"]["n_accounts"] == m["n_accounts"] == split["evaluated_accounts"]
    assert "distillwatch included" in split["note"]
    # the same model on both sides: nothing better, nothing regressed
    assert m["compare"]["regressions"] == []
    assert all(c["better"] in ("tie", None) for c in m["compare"]["checks"])
    assert set(m["dilution"]["methods"]) == {"distillwatch", *names}
    page = (out / "report.html").read_text()
    assert "distillwatch included" in page and "<h2>Dilution</h2>" in page
    assert "<h2>Model comparison</h2>" in page and (out / "dilution.png").exists()
    printed = capsys.readouterr().out
    assert all(f"\n{n} " in printed for n in names)


def test_evaluate_baselines_on_separate_training_data(tmp_path, sim_dir, tiny_model_dir):
    from training.simulator import run_simulate

    train = tmp_path / "train"
    run_simulate(40, 3, train, progress=False)
    out = tmp_path / "eval"
    extra = [
        "--baselines-train-events",
        str(train / "events.jsonl"),
        "--baselines-train-labels",
        str(train / "labels.jsonl"),
    ]
    assert _evaluate(sim_dir, tiny_model_dir, out, *extra) == 0
    m = json.loads((out / "metrics.json").read_text())
    n_labelled = sum(1 for _ in (sim_dir / "labels.jsonl").open())
    assert m["evaluated_on"]["accounts"] == n_labelled  # nothing held back for fitting
    assert m["evaluated_on"]["baseline_fit"]["fit_accounts"] == 40
    assert len(m["baselines"]) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--baselines-train-events", "{sim}/events.jsonl"], "go together"),
        (
            [
                "--baselines-train-events",
                "{sim}/events.jsonl",
                "--baselines-train-labels",
                "{sim}/labels.jsonl",
            ],
            "in both the baseline-fitting and the evaluated data",
        ),
        (["--dilution-accounts", "5"], "needs --dilution"),
    ],
)
def test_evaluate_bad_options_are_one_line_errors(
    tmp_path, sim_dir, tiny_model_dir, capsys, extra, message
) -> None:
    extra = [e.format(sim=sim_dir) for e in extra]
    assert _evaluate(sim_dir, tiny_model_dir, tmp_path / "eval", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


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


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--dilution-augment", "-1", "dilution_augment must be in [0, 10]"),
        ("--content-dropout", "1.0", "content_dropout must be in [0, 1)"),
        ("--length-dropout", "1.0", "length_dropout must be in [0, 1)"),
        ("--ensemble", "0", "ensemble must be in [1, 16]"),
        ("--kind-balance", "2", "kind_balance must be in [0, 1]"),
        ("--chain-augment", "-3", "chain_augment must be an integer in [0, 10000]"),
    ],
)
def test_train_rejects_a_bad_augmentation_setting_before_any_work(
    tmp_path, sim_dir, capsys, flag, value, message
):
    code = main(
        [
            "train",
            "--events",
            str(sim_dir / "events.jsonl"),
            "--labels",
            str(sim_dir / "labels.jsonl"),
            "--out",
            str(tmp_path / "m"),
            flag,
            value,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("flags", "context_reuse", "ensemble"),
    [([], False, 1), (["--context-reuse"], True, 1), (["--ensemble", "3"], False, 3)],
)
def test_train_passes_the_feature_set_and_ensemble_on(
    tmp_path, sim_dir, monkeypatch, flags, context_reuse, ensemble
):
    from distillwatch import api

    seen = {}

    def fake_train(table, labels, *, config, **kwargs):
        seen["config"] = config
        raise ValueError("stop here")  # the CLI's one-line error path; nothing is trained

    monkeypatch.setattr(api, "train", fake_train)
    args = ["train", "--events", str(sim_dir / "events.jsonl")]
    args += ["--labels", str(sim_dir / "labels.jsonl"), "--out", str(tmp_path / "m"), *flags]
    assert main(args) == 2
    assert seen["config"].features.context_reuse is context_reuse
    assert seen["config"].ensemble == ensemble
    assert not (tmp_path / "m").exists()


def test_train_passes_the_chaining_settings_on(tmp_path, sim_dir, monkeypatch):
    from distillwatch import api

    seen = []

    def fake_train(table, labels, *, config, **kwargs):
        seen.append(config)
        raise ValueError("stop here")

    monkeypatch.setattr(api, "train", fake_train)
    args = ["train", "--events", str(sim_dir / "events.jsonl")]
    args += ["--labels", str(sim_dir / "labels.jsonl"), "--out", str(tmp_path / "m")]
    assert main(args) == 2
    assert main([*args, "--chain-augment", "40", "--chain-kinds", "organic_eval_team"]) == 2
    assert (seen[0].chain_augment, seen[0].chain_kinds) == (0, ())
    assert (seen[1].chain_augment, seen[1].chain_kinds) == (40, ("organic_eval_team",))
    assert main([*args, "--length-dropout", "0.5"]) == 2
    assert (seen[0].length_dropout, seen[2].length_dropout) == (0.0, 0.5)
    assert main([*args, "--splice-cover-client"]) == 2
    assert (seen[0].splice_cover_client, seen[3].splice_cover_client) == (False, True)
