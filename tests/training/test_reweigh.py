"""``python -m training.reweigh``: a trained model judged at a new no-content view weight."""

import json

import pytest

from model.model_dir import load_model, read_config
from training import reweigh
from training.train import TrainConfig, train


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory, sim_table, sim_labels, hashing_embedder):
    """A small model trained with content dropout (what the no-content view needs)."""
    out = tmp_path_factory.mktemp("reweigh") / "model"
    config = TrainConfig(max_epochs=2, patience=1, n_topics=8, seed=5, dilution_augment=0.0)
    train(
        sim_table,
        sim_labels,
        hashing_embedder,
        {"kind": "hashing", **hashing_embedder.to_dict()},
        config,
        out=out,
        progress=False,
    )
    return out


def test_reweighs_on_the_training_data_into_a_new_model(dropout_model, sim_dir, tmp_path, capsys):
    out = tmp_path / "reweighed"
    args = ["--model", str(dropout_model), "--weight", "0.5", "--out", str(out), "--quiet"]
    data = ["--events", str(sim_dir / "events.jsonl"), "--labels", str(sim_dir / "labels.jsonl")]
    assert reweigh.main([*args, *data]) == 0
    config = read_config(out)
    old = read_config(dropout_model)
    assert config["content_view_weight"] == 0.5 and old["content_view_weight"] == 0.0
    assert config["reweighed_from"] == old["version"] != config["version"]
    assert config["threshold"] != old["threshold"]
    assert (out / "weights.pt").read_bytes() == (dropout_model / "weights.pt").read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())["validation"]
    assert 0.5 < metrics["auroc"] <= 1.0
    assert "Reweighed from" in (out / "README.md").read_text()
    assert "weight 0.5" in capsys.readouterr().err
    loaded = load_model(out)
    assert loaded.meta["reweighed_from"] == old["version"]


def test_refuses_other_data_a_model_without_dropout_and_its_own_directory(
    dropout_model, tiny_model_dir, sim_dir, tmp_path, capsys
) -> None:
    events, labels = sim_dir / "events.jsonl", sim_dir / "labels.jsonl"
    lines = labels.read_text().splitlines()
    fewer = tmp_path / "labels.jsonl"
    fewer.write_text("\n".join(lines[:-3]) + "\n")
    base = ["--weight", "0.5", "--events", str(events)]
    out = tmp_path / "out"
    cases = [
        (
            ["--model", str(dropout_model), *base, "--labels", str(fewer), "--out", str(out)],
            "not the model's training data (labelled accounts",
        ),
        (
            ["--model", str(tiny_model_dir), *base, "--labels", str(labels), "--out", str(out)],
            "needs content_dropout > 0",
        ),
        (
            [
                "--model",
                str(dropout_model),
                *base,
                "--labels",
                str(labels),
                "--out",
                str(dropout_model),
            ],
            "must be a new directory",
        ),
        (
            ["--model", str(dropout_model), "--weight", "0.5", "--out", str(out)],
            "give --events and --labels",
        ),
        (
            [
                "--model",
                str(dropout_model),
                *base,
                "--labels",
                str(labels),
                "--out",
                str(out),
                "--weight",
                "1.0",
            ],
            "content_view_weight must be in [0, 1)",
        ),
    ]
    for argv, message in cases:
        assert reweigh.main([*argv, "--quiet"]) == reweigh.EXIT_BAD_INPUT
        assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written on refusal
