"""Shared fixtures: a tiny simulation, a fake (hashing) embedder and a tiny trained model.

Everything here is hermetic and fast: the hashing embedder stands in for MiniLM, the
simulation uses the committed corpora subset, the model trains for a few epochs. Tests
that need the real encoder are marked ``slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.embedder import offline_hub

offline_hub()  # before anything imports transformers

REPO = Path(__file__).resolve().parents[1]
DATA_SAMPLES = REPO / "data_samples"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never touch the user's real embedding cache from tests."""
    os.environ["DISTILLWATCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("embed-cache"))


@pytest.fixture(scope="session")
def hashing_embedder():
    from model.embedder import HashingEmbedder

    return HashingEmbedder()


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulation (every kind present) written as events.jsonl + labels.jsonl."""
    from training.simulator import run_simulate

    out = tmp_path_factory.mktemp("sim")
    run_simulate(160, 7, out, progress=False)
    return out


@pytest.fixture(scope="session")
def sim_table(sim_dir: Path):
    from model.events import read_events

    return read_events(sim_dir / "events.jsonl")


@pytest.fixture(scope="session")
def sim_labels(sim_dir: Path):
    from training.labels import read_labels

    return read_labels(sim_dir / "labels.jsonl")[0]


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory, sim_table, sim_labels, hashing_embedder
) -> Path:
    """A model trained for a few epochs with the hashing embedder, saved to disk.

    It loads with ``model.model_dir.load_model(path)`` alone: its config names the
    hashing embedder, so no MiniLM is needed.
    """
    from training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "tiny"
    # no dilution augmentation: on 160 hashing-embedded accounts and 8 epochs the spliced
    # accounts cost the shared fixture's separation; tests/training/test_augment.py
    # trains with it. No content dropout either: hashing vectors are the fixture's main
    # signal, and 8 epochs are too few to learn without them (test_train.py covers it)
    config = TrainConfig(
        max_epochs=8,
        patience=2,
        n_topics=8,
        seed=0,
        dilution_augment=0.0,
        content_dropout=0.0,
    )
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


@pytest.fixture(scope="session")
def tiny_detector(tiny_model_dir: Path):
    from model.model_dir import load_model

    return load_model(tiny_model_dir)
