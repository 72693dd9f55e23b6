"""The published baselines: fit / trace contract, causality, thresholds, and what each detects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.exceptions import NotFittedError

from model.events import AccountEvents
from training.baselines import (
    LogisticBaseline,
    MMDWindowBaseline,
    PradaBaseline,
    RulesBaseline,
    default_baselines,
    first_flag_event,
    fit_baselines,
    holdout_baselines,
    run_baselines,
    shapiro_wilk_w,
)
from training.dataset import embed_table
from training.evaluate import evaluate_rows

#: Accounts are cut to their first events: enough for every baseline, and fast.
MAX_EVENTS = 50
BASELINE_CLASSES = (RulesBaseline, LogisticBaseline, PradaBaseline, MMDWindowBaseline)


def _account(
    n: int, *, gap: float = 600.0, prompts: list[str] | None = None, aid: str = "a-x"
) -> AccountEvents:
    prompts = prompts if prompts is not None else [f"question number {i}" for i in range(n)]
    return AccountEvents(
        account_id=aid,
        ts=1.77e9 + gap * np.arange(n, dtype=np.float64),
        prompts=prompts,
        max_tokens=np.full(n, np.nan),
        conversation_id=[None] * n,
        ip=[None] * n,
        user_agent=[None] * n,
        system=[None] * n,
        model=[None] * n,
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data(sim_table, sim_labels, hashing_embedder):
    """(accounts, embeddings, labels as ints) of the shared simulation, cut short."""
    embs = embed_table(sim_table, hashing_embedder, progress=False)
    accounts = [a.head(MAX_EVENTS) for a in sim_table.accounts() if a.account_id in sim_labels]
    embeddings = [embs[a.account_id][:MAX_EVENTS].astype(np.float32) for a in accounts]
    y = [sim_labels[a.account_id].label for a in accounts]
    return accounts, embeddings, y


@pytest.fixture(scope="module")
def fitted(data):
    accounts, embeddings, y = data
    return [b.fit(accounts, embeddings, y) for b in default_baselines(seed=0)]


# --------------------------------------------------------------------------- contract


def test_default_baselines_are_the_four_published_ones_unfitted() -> None:
    baselines = default_baselines(seed=3)
    assert [b.name for b in baselines] == ["rules", "logistic", "prada", "mmd_window"]
    assert not any(hasattr(b, "threshold_") for b in baselines)
    assert "seed=3" in repr(baselines[1])


@pytest.mark.parametrize("cls", BASELINE_CLASSES)
def test_an_unfitted_baseline_refuses_to_score(cls) -> None:
    acc = _account(5)
    with pytest.raises(NotFittedError, match=f"{cls.__name__} is not fitted"):
        cls().trace(acc, np.zeros((5, 8), dtype=np.float32))


def test_traces_have_one_score_per_event_and_are_causal(fitted, data) -> None:
    accounts, embeddings, y = data
    long = [i for i, a in enumerate(accounts) if len(a) >= 30]
    picks = [next(i for i in long if y[i] == 0), *[i for i in long if y[i] == 1][:2]]
    for b in fitted:
        for i in picks:
            acc, emb = accounts[i], embeddings[i]
            tr = b.trace(acc, emb)
            assert tr.shape == (len(acc),) and np.isfinite(tr).all(), b.name
            for k in (1, 7, 20, len(acc) - 1):
                np.testing.assert_allclose(
                    b.trace(acc.head(k), emb[:k]), tr[:k], rtol=1e-6, atol=1e-7, err_msg=b.name
                )


def test_thresholds_keep_organic_fit_accounts_under_the_target_fpr(fitted, data) -> None:
    accounts, embeddings, y = data
    organic = [i for i, lab in enumerate(y) if lab == 0]
    for b in fitted:
        scores = np.array([b.trace(accounts[i], embeddings[i])[-1] for i in organic])
        assert np.mean(scores >= b.threshold_) <= b.target_fpr, b.name
        # and the cutoff is the tightest such one: the top organic score sits right below it
        assert scores.max() < b.threshold_ <= np.nextafter(scores.max(), np.inf), b.name


def test_a_looser_target_fpr_lowers_the_threshold(data) -> None:
    accounts, embeddings, y = data
    strict = RulesBaseline().fit(accounts, embeddings, y)
    loose = RulesBaseline(target_fpr=0.2).fit(accounts, embeddings, y)
    organic = [i for i, lab in enumerate(y) if lab == 0]
    scores = np.array([loose.trace(accounts[i], embeddings[i])[-1] for i in organic])
    assert loose.threshold_ < strict.threshold_
    assert 0.0 < np.mean(scores >= loose.threshold_) <= 0.2


def test_fit_rejects_inputs_that_do_not_line_up(data) -> None:
    accounts, embeddings, y = data
    with pytest.raises(ValueError, match="one of each per account"):
        RulesBaseline().fit(accounts, embeddings[:-1], y)
    bad = list(embeddings)
    bad[3] = bad[3][:-1]
    with pytest.raises(ValueError, match=repr(accounts[3].account_id)):
        PradaBaseline().fit(accounts, bad, y)
    with pytest.raises(ValueError, match="no organic"):
        RulesBaseline().fit(accounts[:5], embeddings[:5], [1] * 5)
    with pytest.raises(ValueError, match="0 \\(organic\\) or 1"):
        RulesBaseline().fit(accounts[:2], embeddings[:2], [0, 2])
    organic = [i for i, lab in enumerate(y) if lab == 0][:20]
    with pytest.raises(ValueError, match="harvesting"):
        LogisticBaseline().fit(
            [accounts[i] for i in organic], [embeddings[i] for i in organic], [0] * len(organic)
        )


def test_trace_refuses_embeddings_from_another_embedder(fitted) -> None:
    mmd = fitted[3]
    with pytest.raises(ValueError, match="fitted on 384"):
        mmd.trace(_account(4), np.zeros((4, 16), dtype=np.float32))


# --------------------------------------------------------------------------- each method


def test_shapiro_wilk_w_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    for n in (3, 4, 5, 6, 7, 11, 50, 300):
        for x in (rng.normal(size=n), rng.exponential(size=n), rng.uniform(size=n)):
            assert shapiro_wilk_w(x) == pytest.approx(stats.shapiro(x)[0], abs=1e-8)
    assert shapiro_wilk_w(np.ones(10)) == 1.0
    with pytest.raises(ValueError, match="at least 3"):
        shapiro_wilk_w(np.ones(2))


def _random_queries(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    """Independent random prompts: nearest-neighbour distances are close to normal."""
    return _unit(rng.normal(size=(n, dim)))


def _probe_queries(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    """A script that probes each seed query with small variations: near-duplicates
    punctuated by jumps, so the distances are bimodal."""
    seeds = _unit(rng.normal(size=(n // 6 + 1, dim)))
    rows = [seeds[i // 6] + 0.02 * rng.normal(size=dim) for i in range(n)]
    return _unit(np.stack(rows))


def test_prada_flags_an_account_whose_query_distances_are_far_from_normal() -> None:
    rng = np.random.default_rng(1)
    organic = [_random_queries(rng, 60) for _ in range(30)]
    accounts = [_account(60, aid=f"o-{i}") for i in range(30)]
    prada = PradaBaseline().fit(accounts, organic, [0] * 30)
    normal = prada.trace(_account(60), _random_queries(rng, 60))
    probing = prada.trace(_account(60), _probe_queries(rng, 60))
    assert probing[-1] >= prada.threshold_
    assert normal[-1] < prada.threshold_
    assert probing[-1] > 0.2 > normal[-1]  # 1 - W: far from normal vs close to it
    assert 0.0 < prada.delta_ < 1.0
    assert (probing[: prada.min_distances - 1] == 0).all()  # no test before enough queries


def test_mmd_flags_a_window_drawn_from_a_shifted_distribution() -> None:
    rng = np.random.default_rng(2)
    dim = 24
    centre, elsewhere = np.zeros(dim), np.zeros(dim)
    centre[0], elsewhere[1] = 1.0, 1.0

    def draw(mean: np.ndarray, n: int) -> np.ndarray:
        return _unit(mean + 0.6 * rng.normal(size=(n, dim)))

    organic = [draw(centre, 40) for _ in range(40)]
    mmd = MMDWindowBaseline(reference_size=400, running_max=False).fit(
        [_account(40, aid=f"o-{i}") for i in range(40)], organic, [0] * 40
    )
    assert mmd.reference_.shape == (400, dim)
    fresh = np.array([mmd.trace(_account(40), draw(centre, 40))[-1] for _ in range(10)])
    assert np.mean(fresh >= mmd.threshold_) <= 0.1  # new organic accounts: about 1 % flagged
    # organic use, then a harvesting run: the score rises once the window fills with it
    switch = np.vstack([draw(centre, 40), draw(elsewhere, 32)])
    tr = mmd.trace(_account(72), switch)
    assert tr[39] < mmd.threshold_ <= tr[-1]
    assert tr[-1] > 5 * fresh.max()
    first = first_flag_event(tr, mmd.threshold_)
    assert first is not None and 40 < first <= 72
    assert (tr[: mmd.min_window - 1] == 0).all()


def test_mmd_running_max_keeps_an_alarm_raised() -> None:
    rng = np.random.default_rng(3)
    dim = 16
    base = np.eye(dim)[0]
    organic = [_unit(base + 0.6 * rng.normal(size=(40, dim))) for _ in range(30)]
    accounts = [_account(40, aid=f"o-{i}") for i in range(30)]
    burst = np.vstack(
        [
            _unit(base + 0.6 * rng.normal(size=(20, dim))),
            _unit(np.eye(dim)[1] + 0.6 * rng.normal(size=(20, dim))),
            _unit(base + 0.6 * rng.normal(size=(60, dim))),
        ]
    )
    window = MMDWindowBaseline(window=16, reference_size=300, running_max=False).fit(
        accounts, organic, [0] * 30
    )
    held = MMDWindowBaseline(window=16, reference_size=300).fit(accounts, organic, [0] * 30)
    last_window = window.trace(_account(100), burst)
    alarm = held.trace(_account(100), burst)
    assert last_window.max() >= window.threshold_ > last_window[-1]  # the burst passed
    assert alarm[-1] >= held.threshold_  # but the alarm it raised stays
    assert (np.diff(alarm) >= 0).all()


def test_rules_score_grows_with_elicitation_share_and_request_rate() -> None:
    cot = "Solve this step by step and show your work: what is 17 * 23?"
    chat = "Any tips for a weekend trip to Lisbon?"
    organic = [_account(30, prompts=[chat] * 30, aid=f"o-{i}") for i in range(20)]
    embs = [np.zeros((30, 8), dtype=np.float32)] * 20
    rules = RulesBaseline().fit(organic, embs, [0] * 20)
    z = np.zeros((40, 8), dtype=np.float32)
    script = rules.trace(_account(40, gap=5.0, prompts=[cot] * 40), z)
    human = rules.trace(_account(40, gap=3600.0, prompts=[cot] * 40), z)
    half = rules.trace(_account(40, gap=5.0, prompts=[cot, chat] * 20), z)
    assert rules.trace(_account(40, gap=5.0, prompts=[chat] * 40), z)[-1] == 0.0
    assert script[-1] > half[-1] > 0.0
    assert script[-1] > human[-1] > 0.0
    assert (np.diff(script) > 0).all()  # more evidence every prompt, at a steady script rate
    assert script[-1] >= rules.threshold_


def test_logistic_separates_held_out_accounts(data, sim_labels) -> None:
    accounts, embeddings, _ = data
    rows = holdout_baselines(
        [LogisticBaseline(n_topics=8)], accounts, embeddings, sim_labels, val_fraction=0.5
    )["logistic"]
    assert 0 < len(rows.account_ids) < len(accounts)
    assert set(rows.labels) == {0, 1}
    m = evaluate_rows(rows, threshold=0.5)
    assert m["auroc"] > 0.85


# --------------------------------------------------------------------------- runner


def test_run_baselines_gives_rows_that_agree_with_traces(fitted, data, sim_labels) -> None:
    accounts, embeddings, _ = data
    some = dict(list(sim_labels.items())[:-10])  # unlabelled accounts are left out
    rows = run_baselines(fitted, accounts, embeddings, some)
    assert list(rows) == [b.name for b in fitted]
    for b in fitted:
        r = rows[b.name]
        assert len(r.account_ids) == len(some) == len(r.traces)
        for acc_id, score, trace, first, label in zip(
            r.account_ids, r.scores, r.traces, r.first_flag, r.labels, strict=True
        ):
            assert score == trace[-1]
            assert first == first_flag_event(trace, b.threshold_)
            assert label == some[acc_id].label
        m = evaluate_rows(r, b.threshold_)
        assert m["n_accounts"] == len(some)
        assert m["fpr_at_threshold"] <= 0.01  # these accounts are the fit data
        flagged = [s >= b.threshold_ for s in r.scores]
        assert all(f is not None for f, fl in zip(r.first_flag, flagged, strict=True) if fl)
        assert {rec["kind"] for rec in r.to_records()} <= {lab.kind for lab in sim_labels.values()}


def test_fit_baselines_needs_distinct_names(data, sim_labels) -> None:
    accounts, embeddings, _ = data
    with pytest.raises(ValueError, match="unique"):
        fit_baselines([RulesBaseline(), RulesBaseline()], accounts, embeddings, sim_labels)
    fitted = fit_baselines([PradaBaseline()], accounts, embeddings, sim_labels)
    assert fitted[0].threshold_ > 0.0
