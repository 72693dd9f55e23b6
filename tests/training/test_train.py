"""Training: a tiny run separates simulated harvesting from organic use and sets its threshold."""

import pytest

from training.dataset import group_split
from training.labels import Label
from training.train import TrainConfig


def test_tiny_model_learns_something(tiny_model_dir) -> None:
    import json

    metrics = json.loads((tiny_model_dir / "metrics.json").read_text())["validation"]
    assert metrics["auroc"] > 0.85
    assert metrics["fpr_at_threshold"] <= 0.1


def test_split_keeps_campaigns_whole() -> None:
    labels = [Label(f"a{i}", 1, f"c{i % 4}", "hydra_fleet") for i in range(40)]
    labels += [Label(f"o{i}", 0, None, "organic_casual") for i in range(40)]
    train, val = group_split(labels, 0.25, seed=0)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 80
    camp_train = {labels[i].campaign for i in train if labels[i].campaign}
    camp_val = {labels[i].campaign for i in val if labels[i].campaign}
    assert camp_train.isdisjoint(camp_val) and camp_val
    assert group_split(labels, 0.25, seed=0) == (train, val)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="target_fpr"):
        TrainConfig(target_fpr=0.0)
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
