"""The dilution experiment: mixed accounts at exact shares, and the curve's documented shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.baselines import MMDWindowBaseline, PradaBaseline, RulesBaseline, default_baselines
from training.corpora import Corpora
from training.dilution import (
    DETECTOR_NAME,
    dilution_curve,
    mixed_simulation,
    organic_simulation,
    realised_shares,
)

MAX_EVENTS = 50


@pytest.fixture(scope="module")
def corpora() -> Corpora:
    return Corpora.load()


@pytest.fixture(scope="module")
def baselines(tiny_detector, sim_table, sim_labels):
    """The four baselines, fitted on the shared simulation through the detector's embedder."""
    accounts = [a.head(MAX_EVENTS) for a in sim_table.accounts() if a.account_id in sim_labels]
    embeddings = [tiny_detector.embed(a.prompts) for a in accounts]
    y = [sim_labels[a.account_id].label for a in accounts]
    return [b.fit(accounts, embeddings, y) for b in default_baselines(seed=0)]


@pytest.fixture(scope="module")
def curve(tiny_detector, baselines):
    return dilution_curve(
        tiny_detector,
        baselines,
        shares=(0.05, 0.25),
        n_accounts_per_share=4,
        n_organic=30,
        n_events=40,
        seed=1,
    )


def test_mixed_accounts_carry_exactly_the_requested_share(corpora) -> None:
    sim = mixed_simulation(0.25, n_accounts=3, n_events=40, seed=2, corpora=corpora)
    assert {lab["kind"] for lab in sim.labels} == {"slow_drip"}
    assert all(lab["label"] == 1 for lab in sim.labels)
    assert set(realised_shares(sim).values()) == {0.25}
    assert len(sim.events) == 3 * 40
    # 5 % of 50 is no whole number of prompts: the simulator lengthens the accounts instead
    odd = mixed_simulation(0.05, n_accounts=2, n_events=50, seed=2, corpora=corpora)
    assert set(realised_shares(odd).values()) == {0.05}
    assert len(odd.events) == 2 * 60


def test_organic_population_has_no_harvesting(corpora) -> None:
    sim = organic_simulation(25, seed=2, corpora=corpora)
    assert len(sim.labels) == 25
    assert all(lab["label"] == 0 and lab["kind"].startswith("organic") for lab in sim.labels)
    assert not any(sim.harvest_flags)


def test_dilution_curve_returns_the_documented_structure(curve, tiny_detector, baselines) -> None:
    assert json.loads(json.dumps(curve)) == curve  # plain JSON data
    assert curve["shares"] == [0.05, 0.25]
    assert curve["realised_shares"] == pytest.approx([0.05, 0.25], abs=1e-12)
    assert curve["events_per_account"] == [40.0, 40.0]
    assert (curve["n_mixed_per_share"], curve["n_organic"], curve["n_events"]) == (4, 30, 40)
    assert curve["fpr"] == 0.01
    methods = curve["methods"]
    assert list(methods) == [DETECTOR_NAME, *(b.name for b in baselines)]
    assert methods[DETECTOR_NAME]["threshold"] == tiny_detector.threshold
    for b in baselines:
        assert methods[b.name]["threshold"] == b.threshold_
    for name, m in methods.items():
        for key in ("recall_at_threshold", "recall_at_1pct_fpr"):
            assert len(m[key]) == 2, (name, key)
            assert all(v in (0.0, 0.25, 0.5, 0.75, 1.0) for v in m[key]), (name, key)
        assert 0.0 <= m["fpr_at_threshold"] <= 1.0
        assert m["control_at_threshold"] is not None and m["control_at_1pct_fpr"] is not None


def test_more_harvesting_is_easier_to_see_for_the_keyword_rule(curve) -> None:
    rules = curve["methods"]["rules"]
    assert rules["recall_at_1pct_fpr"][1] >= rules["recall_at_1pct_fpr"][0]
    assert rules["recall_at_1pct_fpr"][1] > rules["control_at_1pct_fpr"]


def test_dilution_curve_refuses_bad_requests_before_simulating(tiny_detector, baselines) -> None:
    with pytest.raises(ValueError, match="n_events >= 100"):
        dilution_curve(tiny_detector, baselines, shares=(0.01,), n_events=50)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        dilution_curve(tiny_detector, baselines, shares=(0.0, 0.1))
    with pytest.raises(ValueError, match="'prada' is not fitted"):
        dilution_curve(tiny_detector, [PradaBaseline()])
    named = RulesBaseline()
    named.name = DETECTOR_NAME
    with pytest.raises(ValueError, match="unique and not 'distillwatch'"):
        dilution_curve(tiny_detector, [named])
    with pytest.raises(ValueError, match="n_organic"):
        dilution_curve(tiny_detector, baselines, n_organic=0)


def test_dilution_curve_without_control(tiny_detector, baselines) -> None:
    mmd = [b for b in baselines if isinstance(b, MMDWindowBaseline)]
    out = dilution_curve(
        tiny_detector,
        mmd,
        shares=(0.1,),
        n_accounts_per_share=2,
        n_organic=5,
        n_events=20,
        control=False,
    )
    assert set(out["methods"]) == {DETECTOR_NAME, "mmd_window"}
    assert out["methods"]["mmd_window"]["control_at_threshold"] is None
    assert np.isclose(out["realised_shares"][0], 0.1)
