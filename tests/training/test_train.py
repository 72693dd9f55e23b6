"""Training: a tiny run separates simulated harvesting from organic use and sets its threshold."""

from typing import Any

import numpy as np
import pytest
import torch

from model.events import AccountEvents, Event
from training.dataset import AccountExample, group_split, prompt_labels
from training.labels import Label, prompt_digest
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
    with pytest.raises(ValueError, match="content_dropout"):
        TrainConfig(content_dropout=1.0)
    with pytest.raises(ValueError, match="content_dropout"):
        TrainConfig(content_dropout=-0.1)
    with pytest.raises(ValueError, match="length_dropout"):
        TrainConfig(length_dropout=1.0)


def _batch(b: int, t: int = 5, d: int = 8, f: int = 36) -> dict[str, torch.Tensor]:
    return {
        "emb": torch.randn(b, t, d) + 3.0,  # no row is zero by chance
        "feats": torch.randn(b, t, f),
        "mask": torch.ones(b, t, dtype=torch.bool),
        "lengths": torch.full((b,), t),
        "labels": (torch.arange(b) % 2).float(),
        "prompt_y": torch.zeros(b, t),
        "prompt_mask": torch.zeros(b, t, dtype=torch.bool),
        "position_w": torch.ones(b, t),
    }


def _watched_lit(
    monkeypatch, seen: list[torch.Tensor], key: str = "emb", n_features: int = 36, **kwargs: Any
):
    """A small LitDetector whose ``_loss`` records the ``batch[key]`` it is given in ``seen``."""
    from training.lightning_module import LitDetector

    lit = LitDetector({"embed_dim": 8, "n_features": n_features}, **kwargs)
    lit.log = lambda *a, **k: None  # no trainer attached
    real_loss = lit._loss
    monkeypatch.setattr(lit, "_loss", lambda batch: seen.append(batch[key]) or real_loss(batch))
    return lit


def test_content_dropout_zeroes_whole_streams_in_training_only(monkeypatch) -> None:
    from training.lightning_module import LitDetector

    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    lit = _watched_lit(monkeypatch, seen, content_dropout=0.5)
    batch = _batch(400)
    loss = lit.training_step(batch, 0)
    assert torch.isfinite(loss)
    emb = seen[0]
    zeroed = (emb == 0).all(dim=(1, 2))
    kept = (emb == batch["emb"]).all(dim=(1, 2))
    assert bool((zeroed | kept).all())  # a stream loses all of its embeddings or none
    assert 150 < int(zeroed.sum()) < 250  # about half of 400
    lit.validation_step(batch, 0)
    assert torch.equal(seen[1], batch["emb"])  # validation sees every embedding
    _watched_lit(monkeypatch, seen).training_step(batch, 0)  # dropout off by default
    assert torch.equal(seen[2], batch["emb"])
    with pytest.raises(ValueError, match="content_dropout"):
        LitDetector({"embed_dim": 8, "n_features": 36}, content_dropout=1.0)


def test_length_dropout_zeroes_only_the_length_columns_of_whole_streams(monkeypatch) -> None:
    from training.lightning_module import LitDetector
    from training.train import LENGTH_FEATURES

    names = TrainConfig().features.names
    cols = tuple(names.index(n) for n in LENGTH_FEATURES)
    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    lit = _watched_lit(
        monkeypatch, seen, "feats", len(names), length_dropout=0.5, length_columns=cols
    )
    batch = _batch(400, f=len(names))
    batch["feats"] = batch["feats"] + 5.0  # no value is zero by chance
    assert torch.isfinite(lit.training_step(batch, 0))
    feats, other = seen[0], [i for i in range(len(names)) if i not in cols]
    assert torch.equal(feats[:, :, other], batch["feats"][:, :, other])  # the rest untouched
    zeroed = (feats[:, :, list(cols)] == 0).all(dim=(1, 2))
    kept = (feats[:, :, list(cols)] == batch["feats"][:, :, list(cols)]).all(dim=(1, 2))
    assert bool((zeroed | kept).all()) and 150 < int(zeroed.sum()) < 250
    lit.validation_step(batch, 0)
    assert torch.equal(seen[1], batch["feats"])  # validation sees every feature
    with pytest.raises(ValueError, match="length_dropout"):
        LitDetector({"embed_dim": 8, "n_features": 36}, length_dropout=-0.1)


def test_streams_marked_keep_content_are_exempt_from_content_dropout(monkeypatch) -> None:
    from training.augment import KIND
    from training.dataset import SequenceDataset, collate

    def example(i: int, kind: str) -> AccountExample:
        rng = np.random.default_rng(i)
        return AccountExample(
            account_id=f"a{i}",
            emb=(rng.normal(size=(4, 8)) + 3).astype(np.float16),
            feats=rng.normal(size=(4, 36)).astype(np.float32),
            label=1,
            kind=kind,
            campaign=None,
            state=None,  # type: ignore[arg-type]  # not read here
            prompt_y=np.ones(4, dtype=np.float32),
        )

    examples = [example(i, KIND if i % 2 else "cot_harvest") for i in range(200)]
    ds = SequenceDataset(examples, max_len=16, keep_content_kinds=(KIND,))
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["keep_content"].tolist() == [bool(i % 2) for i in range(200)]
    assert not collate([SequenceDataset(examples, 16)[1]])["keep_content"].any()
    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    _watched_lit(monkeypatch, seen, content_dropout=0.9).training_step(batch, 0)
    zeroed = (seen[0] == 0).all(dim=(1, 2))
    assert not zeroed[1::2].any()  # every spliced stream kept its embeddings
    assert int(zeroed[0::2].sum()) > 70  # about 90 of the 100 others lost theirs


def _account(prompts: list[str]) -> AccountEvents:
    return AccountEvents.from_events([Event("a", float(i), p) for i, p in enumerate(prompts)])


def test_prompt_labels_come_from_the_listed_digests() -> None:
    acc = _account(["hello", "Solve x. Think step by step.", "thanks", "Prove y step by step."])
    listed = frozenset(prompt_digest(p) for p in acc.prompts[1::2])
    y = prompt_labels(acc, Label("a", 1, harvest_prompts=listed))
    assert y.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert np.isnan(prompt_labels(acc, Label("a", 1))).all()  # harvesting, prompts unknown
    assert prompt_labels(acc, Label("a", 0)).tolist() == [0.0] * 4


def test_cover_traffic_before_the_first_harvesting_prompt_is_not_taught_as_harvesting() -> None:
    def example(label: int, prompt_y: np.ndarray | None) -> AccountExample:
        n = 5
        return AccountExample(
            "a",
            np.zeros((n, 2), np.float16),
            np.zeros((n, 3), np.float32),
            label,
            "k",
            None,
            state=None,  # type: ignore[arg-type]  # not read here
            prompt_y=prompt_y,  # type: ignore[arg-type]
        )

    drip = example(1, np.array([0, 0, 1, 0, 1], np.float32))
    assert drip.position_weights().tolist() == [0, 0, 1, 1, 1]
    assert drip.position_weights(ramp=2).tolist() == [0, 0, 0.5, 0.5, 1]
    assert example(1, None).position_weights().tolist() == [1] * 5  # unknown: every position
    assert example(0, np.zeros(5, np.float32)).position_weights().tolist() == [1] * 5


def test_prompt_head_learns_which_prompts_harvest(tiny_model_dir, tmp_path) -> None:
    """On accounts of an unseen seed, the per-prompt estimate counts a larger share of
    harvesting prompts in harvesting accounts than in organic ones."""
    from model.events import read_events
    from model.model_dir import load_model
    from training.labels import read_labels
    from training.simulator import run_simulate

    run_simulate(60, 8, tmp_path, progress=False)
    detector = load_model(tiny_model_dir)
    labels = read_labels(tmp_path / "labels.jsonl")[0]
    table = read_events(tmp_path / "events.jsonl")
    shares: dict[int, list[float]] = {0: [], 1: []}
    for trace in detector.trace_many(list(table.accounts())):
        assert trace.prompt_count is not None
        shares[labels[trace.account_id].label].append(trace.prompt_count / len(trace.probs))
    assert np.median(shares[1]) > 2 * np.median(shares[0])


def test_threshold_counts_organic_accounts_flagged_at_any_prefix() -> None:
    """An organic account whose score spiked early and fell back would have been flagged by
    the online scorer: with "any_prefix" the threshold keeps it under the target rate."""
    from model.scorer import AccountTrace
    from training.train import operating_threshold

    rng = np.random.default_rng(0)
    traces, labels = [], []
    for i in range(200):
        probs = rng.uniform(0.0, 0.3, size=20)
        if i < 10:  # 5 % of organic accounts spike early, then look organic again
            probs[2] = 0.95
        traces.append(AccountTrace(f"o{i}", probs, state=None))  # type: ignore[arg-type]
        labels.append(0)
    y = np.array(labels)
    strict = operating_threshold(traces, y, TrainConfig(target_fpr=0.01))
    last = operating_threshold(traces, y, TrainConfig(target_fpr=0.01, threshold_on="last"))
    assert last < 0.3 < 0.95 < strict
    ever = np.mean([t.probs.max() >= strict for t in traces])
    assert ever <= 0.01
    with pytest.raises(ValueError, match="threshold_on"):
        TrainConfig(threshold_on="max")  # type: ignore[arg-type]


def test_an_ensemble_trains_saves_loads_and_scores_online_as_in_batch(
    sim_table, sim_labels, hashing_embedder, tmp_path
) -> None:
    """Member 0 is the single network of the same seed; the saved ensemble reloads with
    every member; its carried state through the store's bytes reproduces batch scores."""
    from model.model_dir import load_model, read_config
    from model.network import EnsembleDetector
    from model.scorer import AccountState
    from training.train import train

    def fit(n: int, out):
        config = TrainConfig(
            max_epochs=2, patience=1, n_topics=8, seed=3, dilution_augment=0.0, ensemble=n
        )
        embed_config = {"kind": "hashing", **hashing_embedder.to_dict()}
        return train(sim_table, sim_labels, hashing_embedder, embed_config, config, out, False)

    single, _ = fit(1, None)
    ens, report = fit(2, tmp_path / "ens")
    assert isinstance(ens.network, EnsembleDetector) and ens.network.n_members == 2
    for a, b in zip(
        single.network.state_dict().values(),
        ens.network.members[0].state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert report["training"]["config"]["ensemble"] == 2
    assert read_config(tmp_path / "ens")["ensemble"] == 2
    assert "mean logit of 2" in (tmp_path / "ens" / "README.md").read_text()

    loaded = load_model(tmp_path / "ens")
    assert isinstance(loaded.network, EnsembleDetector) and loaded.network.n_members == 2
    accounts = [a for a in sim_table.accounts() if len(a) >= 8][:4]
    batch = ens.score_accounts(accounts)
    again = loaded.score_accounts(accounts)
    assert [s.score for s in again] == pytest.approx([s.score for s in batch], abs=1e-6)
    for acc, expected in zip(accounts, batch, strict=True):
        state, score = loaded.update(None, acc.slice(0, 3))
        state = AccountState.from_bytes(state.to_bytes())
        state, score = loaded.update(state, acc.slice(3, len(acc)))
        assert score.score == pytest.approx(expected.score, abs=1e-4)
        assert loaded.prompt_count(state) == pytest.approx(
            float(next(loaded.trace_many([acc])).prompt_count), rel=1e-4
        )
    # a state of the single network is refused, not scored wrongly
    with pytest.raises(ValueError, match="2-member ensemble"):
        loaded.update(single.new_state(), accounts[0].slice(0, 1))


def test_ensemble_size_is_validated() -> None:
    with pytest.raises(ValueError, match="ensemble"):
        TrainConfig(ensemble=0)
    with pytest.raises(ValueError, match="ensemble"):
        TrainConfig(ensemble=17)


def _example(i: int, label: int, kind: str) -> AccountExample:
    rng = np.random.default_rng(i)
    return AccountExample(
        account_id=f"a{i}",
        emb=rng.normal(size=(3, 8)).astype(np.float16),
        feats=rng.normal(size=(3, 36)).astype(np.float32),
        label=label,
        kind=kind,
        campaign=None,
        state=None,  # type: ignore[arg-type]  # not read here
    )


def test_kind_weights_even_out_kinds_within_each_class() -> None:
    from training.dataset import kind_weights

    kinds = [(0, "casual")] * 30 + [(0, "eval_team")] * 3 + [(1, "cot")] * 6 + [(1, "drip")] * 2
    examples = [_example(i, y, k) for i, (y, k) in enumerate(kinds)]
    labels = np.array([y for y, _ in kinds])
    assert kind_weights(examples, 0.0).tolist() == [1.0] * len(examples)
    w = kind_weights(examples, 1.0)
    for c in (0, 1):  # each class keeps mean weight 1: the class balance is unchanged
        assert w[labels == c].mean() == pytest.approx(1.0)
    # with power 1 each kind of a class carries the same total weight
    assert w[:30].sum() == pytest.approx(w[30:33].sum())
    assert w[33:39].sum() == pytest.approx(w[39:].sum())
    half = kind_weights(examples, 0.5)
    assert 1 < half[30] / half[0] < w[30] / w[0]  # in between


def test_account_weights_scale_each_accounts_loss() -> None:
    from training.dataset import SequenceDataset, collate
    from training.lightning_module import LitDetector

    examples = [_example(i, i % 2, "k") for i in range(4)]
    lit = LitDetector({"embed_dim": 8, "n_features": 36}).eval()
    plain = collate([SequenceDataset(examples, 8)[i] for i in range(4)])
    assert plain["account_w"].tolist() == [1.0] * 4
    heavy = collate(
        [SequenceDataset(examples, 8, account_weights=[3.0, 1.0, 1.0, 1.0])[i] for i in range(4)]
    )
    only0 = collate(
        [SequenceDataset(examples, 8, account_weights=[1.0, 0.0, 0.0, 0.0])[i] for i in range(4)]
    )
    with torch.no_grad():
        base, big, first = lit._loss(plain), lit._loss(heavy), lit._loss(only0)
    # the loss is the mean over accounts: weight 3 on account 0 adds twice its share
    assert float(big) == pytest.approx(float(base) + 2 * float(first), rel=1e-5)
    with pytest.raises(ValueError, match="3 account weights for 4"):
        SequenceDataset(examples, 8, account_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="kind_balance"):
        TrainConfig(kind_balance=1.5)


def test_content_views_train_save_load_score_online_and_reweigh(
    sim_table, sim_labels, hashing_embedder, tmp_path
) -> None:
    """A model judged with and without content: calibrated on the mixed score, saved with
    its weight, reloaded, scored online as in batch; reweighing an existing model on its
    training data gives what training with that weight gives."""
    from model.model_dir import load_model, read_config
    from model.network import ContentViews, content_view_weight
    from model.scorer import AccountState
    from training.train import reweigh_content_views, train

    embed_config = {"kind": "hashing", **hashing_embedder.to_dict()}

    def fit(weight: float, out):
        config = TrainConfig(
            max_epochs=2,
            patience=1,
            n_topics=8,
            seed=3,
            dilution_augment=0.0,
            content_view_weight=weight,
        )
        return train(sim_table, sim_labels, hashing_embedder, embed_config, config, out, False)

    plain, _ = fit(0.0, tmp_path / "plain")
    views, report = fit(0.5, tmp_path / "views")
    assert isinstance(views.network, ContentViews)
    assert read_config(tmp_path / "views")["content_view_weight"] == 0.5
    assert read_config(tmp_path / "plain")["content_view_weight"] == 0.0
    assert "with and without its embedding" in (tmp_path / "views" / "README.md").read_text()
    # the same trained weights, a different score
    for a, b in zip(
        plain.network.state_dict().values(), views.network.inner.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert (plain.calibration.a, plain.calibration.b) != (views.calibration.a, views.calibration.b)

    loaded = load_model(tmp_path / "views")
    assert content_view_weight(loaded.network) == 0.5
    accounts = [a for a in sim_table.accounts() if len(a) >= 8][:4]
    batch = views.score_accounts(accounts)
    assert [s.score for s in loaded.score_accounts(accounts)] == pytest.approx(
        [s.score for s in batch], abs=1e-6
    )
    for acc, expected in zip(accounts, batch, strict=True):
        state, score = loaded.update(None, acc.slice(0, 3))
        state = AccountState.from_bytes(state.to_bytes())
        state, score = loaded.update(state, acc.slice(3, len(acc)))
        assert score.score == pytest.approx(expected.score, abs=1e-4)
    with pytest.raises(ValueError, match="with and without content"):
        loaded.update(plain.new_state(), accounts[0].slice(0, 1))

    # reweighing the plain model on its training data = training with the weight
    again = load_model(tmp_path / "plain")
    metrics = reweigh_content_views(again, sim_table, sim_labels, 0.5, progress=False)
    assert metrics == report["validation"]
    assert again.threshold == pytest.approx(views.threshold, abs=1e-9)
    assert again.calibration.a == pytest.approx(views.calibration.a, abs=1e-9)
    assert again.meta["training"]["config"]["content_view_weight"] == 0.5
    assert [s.score for s in again.score_accounts(accounts)] == pytest.approx(
        [s.score for s in batch], abs=1e-6
    )


def test_content_view_weight_is_validated() -> None:
    with pytest.raises(ValueError, match="content_view_weight"):
        TrainConfig(content_view_weight=1.0)
    with pytest.raises(ValueError, match="needs content_dropout"):
        TrainConfig(content_view_weight=0.5, content_dropout=0.0)
    saved = TrainConfig(content_view_weight=0.25).to_dict()
    assert TrainConfig.from_dict(saved) == TrainConfig(content_view_weight=0.25)
    with pytest.raises(ValueError, match="unknown TrainConfig fields: colour"):
        TrainConfig.from_dict({**saved, "colour": 1})
