"""Dilution augmentation: what a spliced account keeps, what it borrows, and how training uses it."""

from __future__ import annotations

import numpy as np
import pytest

from model.events import AccountEvents, Event
from model.features import FeatureConfig, FeatureExtractor, fit_topic_centroids
from training.augment import KIND, augmented_examples, draw_share, splice
from training.dataset import AccountExample
from training.train import TrainConfig, model_card, train


def _account(account_id: str, prompts: list[str], t0: float, gap: float, **kw) -> AccountEvents:
    return AccountEvents.from_events(
        [Event(account_id, t0 + i * gap, p, **kw) for i, p in enumerate(prompts)]
    )


def _pair(n_organic: int = 40, n_donor: int = 30):
    organic = _account(
        "org",
        [f"organic question {i}" for i in range(n_organic)],
        1e6,
        300.0,
        ip="10.0.0.1",
        user_agent="browser",
        max_tokens=512,
    )
    donor = _account(
        "har",
        [f"donor prompt {i}" for i in range(n_donor)],
        2e6,
        5.0,
        ip="1.2.3.4",
        user_agent="sdk",
        max_tokens=8192,
        system="be thorough",
    )
    donor_y = np.array([i % 3 != 0 for i in range(n_donor)], dtype=np.float32)  # 0 = cover
    rng = np.random.default_rng(0)
    org_emb = rng.standard_normal((n_organic, 8)).astype(np.float16)
    donor_emb = rng.standard_normal((n_donor, 8)).astype(np.float16)
    return organic, org_emb, donor, donor_emb, donor_y


def test_splice_keeps_the_organic_stream_and_inserts_only_harvesting_prompts() -> None:
    organic, org_emb, donor, donor_emb, donor_y = _pair()
    made = splice(organic, org_emb, donor, donor_emb, donor_y, 4, np.random.default_rng(3))
    acc, y = made.account, made.prompt_y
    assert len(acc) == len(organic) + 4 and int(y.sum()) == 4
    kept = y == 0
    assert [p for p, k in zip(acc.prompts, kept, strict=True) if k] == organic.prompts
    np.testing.assert_array_equal(acc.ts[kept], organic.ts)
    np.testing.assert_array_equal(made.emb[kept], org_emb)
    harvest = {donor.prompts[i] for i in np.flatnonzero(donor_y > 0.5)}
    inserted = [i for i in range(len(acc)) if y[i] == 1]
    for i in inserted:
        assert acc.prompts[i] in harvest
        j = donor.prompts.index(acc.prompts[i])
        np.testing.assert_array_equal(made.emb[i], donor_emb[j])
        assert acc.max_tokens[i] == 8192 and acc.system[i] == "be thorough"
        # the account's own client, and the organic pace
        assert acc.ip[i] == "10.0.0.1" and acc.user_agent[i] == "browser"
    assert np.all(np.diff(acc.ts) >= 0)
    assert acc.ts[0] >= organic.ts[0] - 300 and acc.ts[-1] <= organic.ts[-1] + 300
    assert len(set(acc.conversation_id[i] for i in inserted)) == 4


def test_splice_refuses_what_it_cannot_make() -> None:
    organic, org_emb, donor, donor_emb, donor_y = _pair(n_donor=3)  # 2 harvesting prompts
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="2 harvesting prompts, 4 needed"):
        splice(organic, org_emb, donor, donor_emb, donor_y, 4, rng)
    with pytest.raises(ValueError, match="k must be at least 1"):
        splice(organic, org_emb, donor, donor_emb, donor_y, 0, rng)
    with pytest.raises(ValueError, match="must match"):
        splice(organic, org_emb[:-1], donor, donor_emb, donor_y, 2, rng)


def test_shares_are_log_uniform_within_the_range() -> None:
    rng = np.random.default_rng(0)
    s = np.array([draw_share(rng, (0.01, 0.3)) for _ in range(4000)])
    assert s.min() >= 0.01 and s.max() <= 0.3
    # log-uniform: as many draws below the geometric mean as above it
    assert abs(np.mean(s < np.sqrt(0.01 * 0.3)) - 0.5) < 0.03


def _example(acc: AccountEvents, emb: np.ndarray, label: int, y: np.ndarray, ex: FeatureExtractor):
    feats, state = ex.transform(acc, emb.astype(np.float32))
    return AccountExample(
        acc.account_id, emb, feats, label, "k", "c-1" if label else None, state, y
    )


def test_augmented_examples_are_labelled_spliced_accounts_with_features() -> None:
    organic, org_emb, donor, donor_emb, donor_y = _pair()
    short = organic.head(10)
    topics = fit_topic_centroids(np.vstack([org_emb, donor_emb]).astype(np.float32), k=2, seed=0)
    extractor = FeatureExtractor(FeatureConfig(), topics)
    accounts = [organic, short, donor]
    examples = [
        _example(organic, org_emb, 0, np.zeros(40, np.float32), extractor),
        _example(short, org_emb[:10], 0, np.zeros(10, np.float32), extractor),
        _example(donor, donor_emb, 1, donor_y, extractor),
    ]
    out = augmented_examples(accounts, examples, 5, extractor, (0.02, 0.3), seed=1)
    assert len(out) == 5
    for e in out:
        assert e.label == 1 and e.kind == KIND and e.campaign == "c-1"
        assert e.account_id.startswith("aug-") and ":org+har" in e.account_id  # never the short one
        assert len(e) == len(e.prompt_y) == len(e.emb) == 40 + int(e.prompt_y.sum())
        assert e.feats.shape == (len(e), examples[0].feats.shape[1])
        assert np.isfinite(e.feats).all()
    again = augmented_examples(accounts, examples, 5, extractor, (0.02, 0.3), seed=1)
    assert [e.account_id for e in again] == [e.account_id for e in out]
    # a donor whose harvesting prompts are unknown cannot give any
    examples[2].prompt_y = np.full(30, np.nan, np.float32)
    assert augmented_examples(accounts, examples, 5, extractor, (0.02, 0.3), seed=1) == []


def test_config_checks_the_augmentation_settings() -> None:
    with pytest.raises(ValueError, match="dilution_augment"):
        TrainConfig(dilution_augment=-0.1)
    with pytest.raises(ValueError, match="dilution_shares"):
        TrainConfig(dilution_shares=(0.2, 0.1))
    with pytest.raises(ValueError, match="dilution_shares"):
        TrainConfig(dilution_shares=(0.0, 0.1))


def test_training_adds_spliced_accounts_to_the_training_split_only(
    sim_table, sim_labels, hashing_embedder
) -> None:
    config = TrainConfig(seed=0, max_epochs=1, patience=0, n_topics=8, dilution_augment=0.5)
    detector, report = train(
        sim_table, sim_labels, hashing_embedder, {"kind": "hashing"}, config, progress=False
    )
    tr = report["training"]
    n_organic_train = sum(
        1 for lab in sim_labels.values() if lab.label == 0
    )  # an upper bound: the split keeps 3/4 of them
    assert 0 < tr["n_augmented_accounts"] <= round(0.5 * n_organic_train)
    # validation judged real accounts only
    assert tr["n_train_accounts"] + tr["n_val_accounts"] == tr["n_accounts"]
    assert KIND not in report["validation"].get("per_kind", {})
    n = tr["n_augmented_accounts"]
    assert f"and {n} spliced ones (dilution augmentation)" in model_card(detector, report)
