"""Training augmentations: what a spliced or chained account keeps, what it borrows, and how
training uses it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.events import AccountEvents, Event
from model.features import FeatureConfig, FeatureExtractor, fit_topic_centroids
from training.augment import (
    CHAIN_KIND,
    KIND,
    augmented_examples,
    chain,
    chained_examples,
    draw_share,
    splice,
)
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


def test_splice_with_the_cover_client_borrows_its_system_prompt_and_model() -> None:
    organic, org_emb, donor, donor_emb, donor_y = _pair()
    # the cover's client changes along its stream: every event names its own system / model
    organic = AccountEvents.from_events(
        [
            Event(
                "org",
                float(organic.ts[i]),
                organic.prompts[i],
                ip="10.0.0.1",
                user_agent="browser",
                max_tokens=512,
                system=f"sys {i}" if i % 2 else None,
                model=f"m{i}",
            )
            for i in range(len(organic))
        ]
    )
    made = splice(
        organic, org_emb, donor, donor_emb, donor_y, 6, np.random.default_rng(5), cover_client=True
    )
    acc, y = made.account, made.prompt_y
    inserted = np.flatnonzero(y == 1)
    assert len(inserted) == 6
    for i in inserted:
        before = max(int(i) - 1, 0)
        while before > 0 and y[before] == 1:  # the organic event before it
            before -= 1
        if y[before] == 1:  # inserted at the very start: the first organic event's
            before = int(np.flatnonzero(y == 0)[0])
        assert (acc.system[i], acc.model[i]) == (acc.system[before], acc.model[before])
        assert acc.max_tokens[i] == 8192  # the harvester still asks for long answers
    kept = y == 0
    assert [m for m, k in zip(acc.model, kept, strict=True) if k] == list(organic.model)
    # by default the donor's client fields stay
    plain = splice(organic, org_emb, donor, donor_emb, donor_y, 6, np.random.default_rng(5))
    assert {plain.account.system[i] for i in np.flatnonzero(plain.prompt_y == 1)} == {"be thorough"}


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
    with pytest.raises(ValueError, match="splice_cover_client"):
        TrainConfig(splice_cover_client=1)  # type: ignore[arg-type]
    assert TrainConfig.from_dict({"seed": 3}).splice_cover_client is False  # older models
    with pytest.raises(ValueError, match="dilution_augment"):
        TrainConfig(dilution_augment=-0.1)
    with pytest.raises(ValueError, match="dilution_shares"):
        TrainConfig(dilution_shares=(0.2, 0.1))
    with pytest.raises(ValueError, match="dilution_shares"):
        TrainConfig(dilution_shares=(0.0, 0.1))


def _train_briefly(sim_table, sim_labels, embedder, **config):
    """One epoch on the shared simulation, with ``config`` over a quick base."""
    base = {"seed": 0, "max_epochs": 1, "patience": 0, "n_topics": 8}
    return train(
        sim_table,
        sim_labels,
        embedder,
        {"kind": "hashing"},
        TrainConfig(**{**base, **config}),
        progress=False,
    )


def test_training_adds_spliced_accounts_to_the_training_split_only(
    sim_table, sim_labels, hashing_embedder
) -> None:
    detector, report = _train_briefly(sim_table, sim_labels, hashing_embedder, dilution_augment=0.5)
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


def _team(account_id: str, n: int, t0: float, gap: float, ip: str, tag: str) -> AccountEvents:
    return _account(
        account_id,
        [f"{tag} item {i}" for i in range(n)],
        t0,
        gap,
        ip=ip,
        user_agent=f"sdk-{tag}",
        max_tokens=256 if tag == "a" else 1024,
        conversation_id=f"conv-{tag}",
        system=f"system {tag}",
    )


def test_chain_puts_the_starts_of_its_accounts_one_after_another_as_one_client() -> None:
    a = _team("a", 30, 1e6, 2.0, "10.0.0.1", "a")
    b = _team("b", 50, 5e6, 3.0, "10.0.0.2", "b")
    c = _team("c", 8, 9e6, 1.0, "10.0.0.3", "c")  # shorter than its share: it runs out
    rng = np.random.default_rng(0)
    emb = {x.account_id: rng.standard_normal((len(x), 4)).astype(np.float16) for x in (a, b, c)}
    for seed in range(20):
        acc, e = chain([(x, emb[x.account_id]) for x in (a, b, c)], np.random.default_rng(seed))
        assert 3 <= len(acc) <= len(a) and len(e) == len(acc)
        tags = [p.split()[0] for p in acc.prompts]
        # segments in the order given, each the first events of its account
        assert tags == sorted(tags) and set(tags) == {"a", "b", "c"}
        for tag, src in (("a", a), ("b", b), ("c", c)):
            idx = [i for i, t in enumerate(tags) if t == tag]
            assert acc.prompts[idx[0] : idx[-1] + 1] == src.prompts[: len(idx)]
            np.testing.assert_array_equal(e[idx], emb[src.account_id][: len(idx)])
            assert {acc.system[i] for i in idx} == {f"system {tag}"}
            assert {acc.max_tokens[i] for i in idx} == {src.max_tokens[0]}
            # a segment keeps its own pace; the next starts one of its own gaps later
            np.testing.assert_allclose(np.diff(acc.ts[idx]), np.diff(src.ts[: len(idx)]))
        assert np.all(np.diff(acc.ts) > 0)
        assert acc.ts[0] == a.ts[0]
        assert set(acc.ip) == {"10.0.0.1"} and set(acc.user_agent) == {"sdk-a"}
        assert len(set(acc.conversation_id)) == 3  # conversations stay apart


def test_chain_refuses_what_it_cannot_make() -> None:
    a = _team("a", 5, 0.0, 1.0, "x", "a")
    emb = np.zeros((5, 4), np.float16)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least two"):
        chain([(a, emb)], rng)
    with pytest.raises(ValueError, match="embeddings disagree"):
        chain([(a, emb), (a, emb[:-1])], rng)


def test_chained_examples_chain_accounts_of_one_kind_only() -> None:
    rng = np.random.default_rng(0)
    teams = [_team(f"t{i}", 20, 1e6 * i, 2.0, f"10.0.0.{i}", "a") for i in range(4)]
    users = [_team(f"u{i}", 20, 1e6 * i, 600.0, f"10.0.1.{i}", "b") for i in range(3)]
    lone = _team("lone", 20, 0.0, 5.0, "10.0.2.1", "c")  # its kind has one account
    donor = _team("har", 20, 0.0, 1.0, "1.2.3.4", "h")
    accounts = [*teams, *users, lone, donor]
    all_emb = np.vstack([rng.standard_normal((20, 8)) for _ in accounts]).astype(np.float32)
    extractor = FeatureExtractor(FeatureConfig(), fit_topic_centroids(all_emb, k=2, seed=0))
    kinds = ["team"] * 4 + ["user"] * 3 + ["lone", "harvest"]
    examples = []
    for acc, kind, j in zip(accounts, kinds, range(len(accounts)), strict=True):
        label = int(kind == "harvest")
        ex = _example(
            acc, all_emb[20 * j : 20 * j + 20].astype(np.float16), label, np.zeros(20), extractor
        )
        examples.append(dataclasses.replace(ex, kind=kind))
    out = chained_examples(accounts, examples, 5, extractor, seed=2)
    assert len(out) == 10  # 5 each for "team" and "user"; none for "lone" or the harvester
    for e in out:
        assert e.label == 0 and e.kind == CHAIN_KIND and e.campaign is None
        kind = e.account_id.split("-")[1].split(":")[0]
        members = e.account_id.split(":", 1)[1].split("+")
        assert 2 <= len(members) <= 3 and len(set(members)) == len(members)
        assert {kinds[[a.account_id for a in accounts].index(m)] for m in members} == {kind}
        assert len(e) == len(e.emb) == len(e.prompt_y) <= 20 and not e.prompt_y.any()
        assert e.feats.shape == (len(e), examples[0].feats.shape[1]) and np.isfinite(e.feats).all()
    again = chained_examples(accounts, examples, 5, extractor, seed=2)
    assert [e.account_id for e in again] == [e.account_id for e in out]
    only = chained_examples(accounts, examples, 3, extractor, seed=2, kinds=("user",))
    assert len(only) == 3 and all(e.account_id.startswith("chain-user-") for e in only)
    assert chained_examples(accounts, examples, 0, extractor, seed=2) == []


def test_config_checks_the_chaining_settings() -> None:
    for bad in (-1, 0.5, True, "3"):
        with pytest.raises(ValueError, match="chain_augment"):
            TrainConfig(chain_augment=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chain_kinds"):
        TrainConfig(chain_kinds="organic_eval_team")  # type: ignore[arg-type]
    cfg = TrainConfig(chain_augment=4, chain_kinds=["organic_eval_team"])  # type: ignore[arg-type]
    assert cfg.chain_kinds == ("organic_eval_team",)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_training_adds_chained_accounts_to_the_training_split_only(
    sim_table, sim_labels, hashing_embedder
) -> None:
    detector, report = _train_briefly(
        sim_table, sim_labels, hashing_embedder, dilution_augment=0, chain_augment=3
    )
    tr = report["training"]
    n_kinds = len({lab.kind for lab in sim_labels.values() if lab.label == 0})
    assert 0 < tr["n_chained_accounts"] <= 3 * n_kinds and tr["n_chained_accounts"] % 3 == 0
    assert tr["n_train_accounts"] + tr["n_val_accounts"] == tr["n_accounts"]
    assert CHAIN_KIND not in report["validation"].get("per_kind", {})
    n = tr["n_chained_accounts"]
    assert f"and {n} chained organic ones (chaining augmentation)" in model_card(detector, report)


def test_training_warns_when_chain_kinds_match_no_training_account(
    sim_table, sim_labels, hashing_embedder, caplog
) -> None:
    with caplog.at_level("WARNING", logger="training.train"):
        _, report = _train_briefly(
            sim_table,
            sim_labels,
            hashing_embedder,
            dilution_augment=0,
            chain_augment=2,
            chain_kinds=("organic_no_such_kind",),
        )
    assert report["training"]["n_chained_accounts"] == 0
    assert "organic_no_such_kind" in caplog.text
