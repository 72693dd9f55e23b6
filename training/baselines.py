"""Published and classic detectors of capability harvesting, as baselines for distillwatch.

What it knows: four detectors that an operator could deploy without our sequence model,
each scoring an account's stream causally (the score after event ``i`` uses events ``0..i``
only), so that recall, false-positive rate and time to detection compare like for like:

* :class:`RulesBaseline`: the rule a trust-and-safety team writes first: many prompts
  that ask for reasoning or grading, sent at a script's rate.
* :class:`LogisticBaseline`: distillwatch's own per-event features, averaged over the
  account, with a logistic regression on top: what the sequence model adds over them.
* :class:`PradaBaseline`: Juuti et al., "PRADA: Protecting against DNN Model Stealing
  Attacks", EuroS&P 2019: the distances between an account's successive queries are not
  normally distributed when a script explores the input space.
* :class:`MMDWindowBaseline`: Liu, Guo and Dong (2026), a kernel two-sample test of the
  account's recent prompts against organic traffic.

All share one interface (:class:`Baseline`, scikit-learn conventions): ``fit(accounts,
embeddings, labels)`` learns what the method learns and sets ``threshold_`` to the score
at ``target_fpr`` (1 %) false-positive rate on the organic fit accounts; ``trace(account,
embeddings)`` gives the per-event scores, the last of which is the account score.
:func:`run_baselines` turns them into :class:`training.evaluate.EvalRows`, the rows
``evaluate_rows``, the report and the dilution experiment read.

What it does not know: the sequence model, files, plotting.

Example::

    embs = embed_table(table, detector.embedder)            # training.dataset
    accounts = [a for a in table.accounts() if a.account_id in labels]
    embeddings = [embs[a.account_id] for a in accounts]
    baselines = fit_baselines(default_baselines(), accounts, embeddings, labels)
    rows = run_baselines(baselines, accounts, embeddings, labels)
    evaluate_rows(rows["prada"], baselines[2].threshold_)
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Protocol, Self

import numpy as np
from sklearn.exceptions import NotFittedError

from model.events import AccountEvents
from model.features import FEATURE_NAMES, FeatureConfig, FeatureExtractor, fit_topic_centroids
from model.lexicon import ELICITATION, RUBRIC, scan_text
from training.dataset import group_split
from training.evaluate import EvalRows
from training.labels import Label
from training.metrics import threshold_at_fpr

DEFAULT_TARGET_FPR = 0.01


class Baseline(Protocol):
    """What every baseline offers: a name, ``fit`` and a causal per-event ``trace``.

    ``threshold_`` (set by ``fit``) is the operating threshold: an account is flagged when
    its score (the last value of its trace) is at or above it, and its ``first_flag_event``
    is the first 1-based position where the trace is.
    """

    name: str
    target_fpr: float
    threshold_: float

    def fit(
        self,
        accounts: Sequence[AccountEvents],
        embeddings: Sequence[np.ndarray],
        labels: Sequence[int],
    ) -> Self: ...

    def trace(self, account: AccountEvents, embeddings: np.ndarray) -> np.ndarray: ...


def first_flag_event(trace: np.ndarray, threshold: float) -> int | None:
    """1-based position of the first event whose score reaches ``threshold``; None if none."""
    above = np.flatnonzero(np.asarray(trace) >= threshold)
    return int(above[0]) + 1 if len(above) else None


class _BaselineBase(ABC):
    """Input checks, the fitted check and the 1 %-FPR threshold shared by all baselines.

    Subclasses implement ``_fit`` (learn, then return the final scores of the organic fit
    accounts, from which the threshold is set) and ``_trace`` (inputs already checked).
    """

    name: str = "baseline"
    target_fpr: float
    threshold_: float
    dim_: int

    def __init__(self, target_fpr: float = DEFAULT_TARGET_FPR):
        self.target_fpr = target_fpr

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({args})"

    def fit(
        self,
        accounts: Sequence[AccountEvents],
        embeddings: Sequence[np.ndarray],
        labels: Sequence[int],
    ) -> Self:
        """Learn from labelled accounts (0 organic, 1 harvesting) and set ``threshold_``."""
        if not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(
                f"{type(self).__name__}.target_fpr must be in [0, 1), got {self.target_fpr}"
            )
        embs, y = _check_fit_inputs(type(self).__name__, accounts, embeddings, labels)
        organic_scores = self._fit(list(accounts), embs, y)
        self.dim_ = int(embs[0].shape[1])
        self.threshold_ = threshold_at_fpr(organic_scores, self.target_fpr)
        return self

    def trace(self, account: AccountEvents, embeddings: np.ndarray) -> np.ndarray:
        """Per-event scores ``(T,)``; position ``i`` depends on events ``0..i`` only."""
        if not hasattr(self, "threshold_"):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet: call fit(accounts, embeddings, "
                "labels) before trace()"
            )
        emb = _check_embeddings(account, embeddings, self.dim_)
        if len(account) == 0:
            return np.zeros(0, dtype=np.float64)
        return self._trace(account, emb)

    def _organic_final_scores(
        self, accounts: list[AccountEvents], embs: list[np.ndarray], y: np.ndarray
    ) -> np.ndarray:
        return np.array(
            [self._trace(a, e)[-1] for a, e, lab in zip(accounts, embs, y, strict=True) if lab == 0]
        )

    @abstractmethod
    def _fit(
        self, accounts: list[AccountEvents], embs: list[np.ndarray], y: np.ndarray
    ) -> np.ndarray: ...

    @abstractmethod
    def _trace(self, account: AccountEvents, emb: np.ndarray) -> np.ndarray: ...


def _check_embeddings(
    account: AccountEvents, embeddings: np.ndarray, dim: int | None
) -> np.ndarray:
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(account):
        raise ValueError(
            f"account {account.account_id!r}: expected embeddings of shape ({len(account)}, D), "
            f"got {tuple(emb.shape)}"
        )
    if dim is not None and emb.shape[1] != dim:
        raise ValueError(
            f"account {account.account_id!r}: embeddings have {emb.shape[1]} dimensions, the "
            f"baseline was fitted on {dim} (another embedder?)"
        )
    return emb


def _check_fit_inputs(
    who: str,
    accounts: Sequence[AccountEvents],
    embeddings: Sequence[np.ndarray],
    labels: Sequence[int],
) -> tuple[list[np.ndarray], np.ndarray]:
    if not len(accounts) == len(embeddings) == len(labels):
        raise ValueError(
            f"{who}.fit: {len(accounts)} accounts, {len(embeddings)} embedding arrays and "
            f"{len(labels)} labels; expected one of each per account"
        )
    if not accounts:
        raise ValueError(f"{who}.fit: no accounts given")
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError(f"{who}.fit: labels must be 0 (organic) or 1 (harvesting)")
    if not (y == 0).any():
        raise ValueError(f"{who}.fit: no organic (label 0) account; the threshold is set on them")
    embs = [_check_embeddings(a, e, None) for a, e in zip(accounts, embeddings, strict=True)]
    dims = {e.shape[1] for e in embs}
    if len(dims) != 1:
        raise ValueError(f"{who}.fit: embeddings of different dimensions {sorted(dims)}")
    empty = [a.account_id for a in accounts if len(a) == 0]
    if empty:
        raise ValueError(f"{who}.fit: accounts without events, e.g. {empty[0]!r}")
    return embs, y.astype(np.int64)


# --------------------------------------------------------------------------- rules


class RulesBaseline(_BaselineBase):
    """Keyword share times request rate: the rule an abuse team writes on day one.

    Score after event ``i`` (in ``[0, 1)``)::

        share = k_i / (i + 1 + prior_events)
        rate  = min(1, log1p(peak_per_hour) / log1p(rate_cap_per_hour))
        score = share * (0.5 + 0.5 * rate)

    ``k_i`` counts the prompts so far that ask for reasoning ("step by step", "show your
    work", ...) or grading ("rubric", "score from 1 to 10", ...) by the lexicons of
    ``model.lexicon``; ``prior_events`` keeps one such prompt out of one from counting as
    100 %; ``peak_per_hour`` is the most requests the account has sent within any trailing
    hour so far. Elicitation is needed for any score; a script's rate doubles it at most.
    The rule is fixed; ``fit`` only sets its cutoff on the organic accounts (the harvesting
    ones are not used).
    """

    name = "rules"

    def __init__(
        self,
        prior_events: float = 5.0,
        rate_cap_per_hour: float = 120.0,
        target_fpr: float = DEFAULT_TARGET_FPR,
    ):
        super().__init__(target_fpr)
        self.prior_events = prior_events
        self.rate_cap_per_hour = rate_cap_per_hour

    def _fit(
        self, accounts: list[AccountEvents], embs: list[np.ndarray], y: np.ndarray
    ) -> np.ndarray:
        if self.prior_events < 0 or self.rate_cap_per_hour <= 0:
            raise ValueError("RulesBaseline needs prior_events >= 0 and rate_cap_per_hour > 0")
        return self._organic_final_scores(accounts, embs, y)

    def _trace(self, account: AccountEvents, emb: np.ndarray) -> np.ndarray:
        hits = np.fromiter(
            (_elicits(p) for p in account.prompts), dtype=np.float64, count=len(account)
        )
        n = np.arange(1, len(account) + 1, dtype=np.float64)
        share = np.cumsum(hits) / (n + self.prior_events)
        ts = np.asarray(account.ts, dtype=np.float64)
        in_hour = n - np.searchsorted(ts, ts - 3600.0, side="left")
        peak = np.maximum.accumulate(in_hour)
        rate = np.minimum(1.0, np.log1p(peak) / math.log1p(self.rate_cap_per_hour))
        return share * (0.5 + 0.5 * rate)


def _elicits(prompt: str) -> bool:
    s = scan_text(prompt)
    return ELICITATION.search(s) or RUBRIC.search(s)


# --------------------------------------------------------------------------- logistic

#: Features that already describe the whole account so far (shares, coverage, position):
#: their current value is kept beside the running mean of every feature.
_ACCOUNT_LEVEL = (
    # the features of FeatureConfig() (the context-reuse ones are opt-in)
    *(n for n in FeatureConfig().names if n.startswith("share_")),
    "topics_covered",
    "topic_entropy",
    "hour_concentration",
    "log_position",
    "mean_log_max_tokens",
)
_ACCOUNT_LEVEL_IDX = np.array([FEATURE_NAMES.index(n) for n in _ACCOUNT_LEVEL])


class LogisticBaseline(_BaselineBase):
    """Account aggregates of distillwatch's per-event features + logistic regression.

    The classic supervised baseline: the running mean of every feature of
    ``model.features`` (plus the current value of the account-level ones: shares of
    elicitation / templates / near duplicates, topic coverage, position), standardised,
    into a class-balanced ``LogisticRegression``. It is fitted on whole accounts (the
    aggregates after their last event) of both labels and scores every prefix, so the
    trace is causal and costs O(T) after the features. The topic prototypes the features
    need are k-means centroids of (a sample of) the fit embeddings.

    Cost: the features' lexicon scans dominate (the same per-event cost as the
    detector's own feature step). The threshold is set on the in-sample predictions for
    the organic fit accounts, so it may run a little optimistic on new accounts.
    """

    name = "logistic"

    def __init__(
        self,
        n_topics: int = 16,
        C: float = 1.0,
        max_topic_sample: int = 20_000,
        seed: int = 0,
        target_fpr: float = DEFAULT_TARGET_FPR,
    ):
        super().__init__(target_fpr)
        self.n_topics = n_topics
        self.C = C
        self.max_topic_sample = max_topic_sample
        self.seed = seed

    def _fit(
        self, accounts: list[AccountEvents], embs: list[np.ndarray], y: np.ndarray
    ) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if not (y == 1).any():
            raise ValueError("LogisticBaseline.fit: needs harvesting (label 1) accounts too")
        if self.n_topics < 2:
            raise ValueError(f"LogisticBaseline.n_topics must be >= 2, got {self.n_topics}")
        sample = _sample_rows(embs, self.max_topic_sample, self.seed)
        k = min(self.n_topics, len(sample))
        centroids = fit_topic_centroids(sample, k=k, seed=self.seed)
        self.extractor_ = FeatureExtractor(FeatureConfig(), centroids)
        final = np.stack([self._aggregates(a, e)[-1] for a, e in zip(accounts, embs, strict=True)])
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000),
        ).fit(final, y)
        # Scored the way ``trace`` scores them: one batch of rows, not the stacked finals,
        # since a product of another shape may round differently and flip a tie at the threshold.
        organic = [(a, e) for a, e, label in zip(accounts, embs, y, strict=True) if label == 0]
        return np.array([self._trace(a, e)[-1] for a, e in organic])

    def _aggregates(self, account: AccountEvents, emb: np.ndarray) -> np.ndarray:
        feats, _ = self.extractor_.transform(account, emb)  # (T, F)
        f = feats.astype(np.float64)
        n = np.arange(1, len(f) + 1, dtype=np.float64)[:, None]
        running_mean = np.cumsum(f, axis=0) / n  # (T, F)
        return np.hstack([running_mean, f[:, _ACCOUNT_LEVEL_IDX]])

    def _trace(self, account: AccountEvents, emb: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(self._aggregates(account, emb))[:, 1]


def _sample_rows(embs: Sequence[np.ndarray], n: int, seed: int) -> np.ndarray:
    """Up to ``n`` rows drawn uniformly from all accounts' embeddings, without stacking all."""
    lengths = np.array([len(e) for e in embs])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    total = int(bounds[-1])
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
    which = np.searchsorted(bounds, picks, side="right") - 1
    return np.stack([embs[a][p - bounds[a]] for a, p in zip(which, picks, strict=True)]).astype(
        np.float32
    )


# --------------------------------------------------------------------------- PRADA


@functools.lru_cache(maxsize=4096)
def _swilk_coefficients(n: int) -> np.ndarray:
    """Shapiro-Wilk coefficients for ``n`` sorted values (Royston 1995, AS R94), as scipy."""
    from scipy.special import ndtri

    a = np.zeros(n, dtype=np.float64)
    half = n // 2
    if n == 3:
        a[0], a[-1] = -math.sqrt(0.5), math.sqrt(0.5)
        return a
    m = ndtri((np.arange(1, half + 1) - 0.375) / (n + 0.25))  # negative: lower half
    summ2 = 2.0 * float(m @ m)
    ssumm2 = math.sqrt(summ2)
    u = 1.0 / math.sqrt(n)
    a1 = -m[0] / ssumm2 + u * (
        0.221157 + u * (-0.147981 + u * (-2.07119 + u * (4.434685 - 2.706056 * u)))
    )
    upper = np.empty(half)
    if n > 5:
        a2 = -m[1] / ssumm2 + u * (
            0.042981 + u * (-0.293762 + u * (-1.752461 + u * (5.682633 - 3.582633 * u)))
        )
        fac = math.sqrt((summ2 - 2 * m[0] ** 2 - 2 * m[1] ** 2) / (1 - 2 * a1**2 - 2 * a2**2))
        upper[:2] = a1, a2
        upper[2:] = -m[2:] / fac
    else:
        fac = math.sqrt((summ2 - 2 * m[0] ** 2) / (1 - 2 * a1**2))
        upper[0] = a1
        upper[1:] = -m[1:] / fac
    a[:half] = -upper
    a[n - half :] = upper[::-1]
    a.setflags(write=False)
    return a


def shapiro_wilk_w(x: np.ndarray) -> float:
    """The Shapiro-Wilk W statistic of ``x`` (n >= 3), equal to ``scipy.stats.shapiro(x)[0]``.

    PRADA needs W after every query; scipy's wrapper costs ~0.2 ms a call, this ~10 µs
    (coefficients cached per n). A sample without spread gets W = 1, as in scipy.
    """
    y = np.sort(np.asarray(x, dtype=np.float64))
    n = len(y)
    if n < 3:
        raise ValueError(f"the Shapiro-Wilk test needs at least 3 values, got {n}")
    centred = y - y.mean()
    ssq = float(centred @ centred)
    if ssq <= 0.0 or y[-1] - y[0] <= 1e-12 * max(abs(y[-1]), 1.0):
        return 1.0
    a = _swilk_coefficients(n)
    return min(1.0, float(a @ y) ** 2 / ssq)


class PradaBaseline(_BaselineBase):
    """PRADA (Juuti, Szyller, Marchal, Asokan, EuroS&P 2019) on prompt embeddings.

    As in the paper (and the authors' reference code): each account keeps a growing set
    ``G`` of its queries and a threshold ``T`` (start 0). A new query's L2 distance to the
    nearest member of ``G`` joins the distance set ``D``; if it exceeds ``T`` the query
    joins ``G`` and ``T = max(T, mean - std)`` of the distances that admitted members to
    ``G``. Once ``D`` (values beyond 3 standard deviations dropped, as in the reference
    code) holds ``min_distances`` values, the Shapiro-Wilk W of ``D`` is tested: an
    attack's exploration gives distances far from normal, W below ``delta``. The score is
    ``1 - W`` (0 until the first test) and ``delta_ = 1 - threshold_`` is chosen on the
    organic fit accounts; harvesting ones are not used.

    Deviations, for LLM traffic: one growing set per account, not one per predicted class
    (a chat model has no output class); the test starts at ``min_distances`` = 20 instead
    of 100 (most accounts send fewer than 100 prompts) and runs after every query
    (``test_every`` = 1) instead of every 10th; between tests the last score holds. L2 on
    unit embeddings is a monotone function of cosine distance, so either reads the same.
    """

    name = "prada"

    def __init__(
        self,
        min_distances: int = 20,
        test_every: int = 1,
        outlier_sigma: float = 3.0,
        target_fpr: float = DEFAULT_TARGET_FPR,
    ):
        super().__init__(target_fpr)
        self.min_distances = min_distances
        self.test_every = test_every
        self.outlier_sigma = outlier_sigma

    @property
    def delta_(self) -> float:
        """The paper's δ: an account is flagged when W < δ (i.e. 1 - W >= threshold_)."""
        if not hasattr(self, "threshold_"):
            raise NotFittedError("PradaBaseline is not fitted yet: call fit() first")
        return 1.0 - self.threshold_

    def _fit(
        self, accounts: list[AccountEvents], embs: list[np.ndarray], y: np.ndarray
    ) -> np.ndarray:
        if self.min_distances < 3 or self.test_every < 1 or self.outlier_sigma <= 0:
            raise ValueError(
                "PradaBaseline needs min_distances >= 3, test_every >= 1 and outlier_sigma > 0"
            )
        return self._organic_final_scores(accounts, embs, y)

    def _trace(self, account: AccountEvents, emb: np.ndarray) -> np.ndarray:
        t_len, dim = emb.shape
        x = emb.astype(np.float64)
        sq = np.einsum("ij,ij->i", x, x)
        members = np.empty((t_len, dim))  # the growing set G, first g rows
        member_sq = np.empty(t_len)
        dists = np.empty(t_len)  # D: nearest-member distance of every query but the first
        g, k = 0, 0
        threshold = 0.0
        g_sum, g_sumsq, g_n = 0.0, 0.0, 1  # distances that admitted members (first: 0)
        out = np.zeros(t_len)
        score = 0.0
        for i in range(t_len):
            if g == 0:
                members[0], member_sq[0], g = x[i], sq[i], 1
            else:
                d2 = sq[i] + member_sq[:g] - 2.0 * (members[:g] @ x[i])
                d = math.sqrt(max(float(d2.min()), 0.0))
                dists[k] = d
                k += 1
                if d > threshold:
                    members[g], member_sq[g] = x[i], sq[i]
                    g += 1
                    g_sum += d
                    g_sumsq += d * d
                    g_n += 1
                    mean = g_sum / g_n
                    std = math.sqrt(max(g_sumsq / g_n - mean * mean, 0.0))
                    threshold = max(threshold, mean - std)
            if k >= self.min_distances and i % self.test_every == 0:
                kept = _reject_outliers(dists[:k], self.outlier_sigma)
                if len(kept) >= self.min_distances:
                    score = 1.0 - shapiro_wilk_w(kept)
            out[i] = score
        return out


def _reject_outliers(d: np.ndarray, sigma: float) -> np.ndarray:
    return d[np.abs(d - d.mean()) < sigma * d.std()]


# --------------------------------------------------------------------------- MMD window


_CHUNK = 256


class MMDWindowBaseline(_BaselineBase):
    """Kernel MMD between an account's recent prompts and organic traffic (Liu, Guo, Dong 2026).

    The window ending at event ``i`` holds the last ``window`` (32) prompt embeddings;
    its score is the unbiased MMD² (Gretton et al. 2012) against a fixed reference sample
    of organic prompt embeddings, Gaussian kernel ``exp(-|x - y|² / (2 σ²))`` with σ the
    median pairwise distance in the reference. An account with fewer than ``window``
    events is scored on all it has, from ``min_window`` (8) events on (0 before: the
    estimate is too noisy on a handful of prompts). By default (``running_max=True``) the
    trace holds the highest window so far: a window test is an alarm that, once raised,
    keeps the account flagged, so the account score is its most anomalous window and a
    diluted account's few harvesting prompts count whenever they bunched. This is the
    stronger reading of the test (the threshold is set on organic accounts' maxima too);
    ``running_max=False`` scores the latest window only.

    ``fit`` uses the organic accounts only: ``reference_size`` (1,000) embeddings drawn
    from them (seeded) and the threshold at ``target_fpr`` on their final scores. Cost
    per account: O(T · (reference_size + window) · D) in numpy, with the window sums from
    running sums along the kernel's band.
    """

    name = "mmd_window"

    def __init__(
        self,
        window: int = 32,
        min_window: int = 8,
        reference_size: int = 1000,
        running_max: bool = True,
        seed: int = 0,
        target_fpr: float = DEFAULT_TARGET_FPR,
    ):
        super().__init__(target_fpr)
        self.window = window
        self.min_window = min_window
        self.reference_size = reference_size
        self.running_max = running_max
        self.seed = seed

    def _fit(
        self, accounts: list[AccountEvents], embs: list[np.ndarray], y: np.ndarray
    ) -> np.ndarray:
        if not 2 <= self.min_window <= self.window:
            raise ValueError(
                f"MMDWindowBaseline needs 2 <= min_window <= window, got {self.min_window}, "
                f"{self.window}"
            )
        if self.reference_size < 2:
            raise ValueError("MMDWindowBaseline.reference_size must be >= 2")
        organic = [e for e, lab in zip(embs, y, strict=True) if lab == 0]
        ref = _sample_rows(organic, self.reference_size, self.seed).astype(np.float64)
        if len(ref) < 2:
            raise ValueError("MMDWindowBaseline.fit: need at least 2 organic prompts")
        ref_sq = np.einsum("ij,ij->i", ref, ref)
        d2 = np.maximum(ref_sq[:, None] + ref_sq[None, :] - 2.0 * ref @ ref.T, 0.0)
        m = len(ref)
        median = float(np.median(np.sqrt(d2[np.triu_indices(m, k=1)])))
        self.bandwidth_ = median if median > 1e-9 else 1.0
        self.reference_ = ref.astype(np.float32)  # float32: the (T, m) product is the cost
        self.reference_sq_ = ref_sq.astype(np.float32)
        k_rr = np.exp(-d2 * self._gamma())
        self.k_rr_ = float((k_rr.sum() - np.trace(k_rr)) / (m * (m - 1)))
        return self._organic_final_scores(accounts, embs, y)

    def _gamma(self) -> float:
        return 1.0 / (2.0 * self.bandwidth_**2)

    def _trace(self, account: AccountEvents, emb: np.ndarray) -> np.ndarray:
        x = emb.astype(np.float64)
        t_len = len(x)
        gamma = self._gamma()
        sq = np.einsum("ij,ij->i", x, x)
        x32, sq32 = x.astype(np.float32), sq.astype(np.float32)
        to_ref = np.empty(t_len)  # mean kernel of each prompt to the reference
        for s in range(0, t_len, _CHUNK):  # small chunks: in-place work stays in cache
            d2 = x32[s : s + _CHUNK] @ self.reference_.T  # (chunk, m)
            d2 *= -2.0
            d2 += sq32[s : s + _CHUNK, None]
            d2 += self.reference_sq_[None, :]
            np.maximum(d2, 0.0, out=d2)
            d2 *= -gamma
            to_ref[s : s + _CHUNK] = np.exp(d2, out=d2).mean(axis=1, dtype=np.float64)
        idx = np.arange(t_len)
        n = np.minimum(idx + 1, self.window)  # window sizes
        start = idx - n + 1
        c = np.concatenate([[0.0], np.cumsum(to_ref)])
        mean_to_ref = (c[idx + 1] - c[start]) / n
        pair_sum = np.zeros(t_len)  # sum of k(x_a, x_b) over a < b inside each window
        for d in range(1, min(self.window, t_len)):
            band = sq[:-d] + sq[d:] - 2.0 * np.einsum("ij,ij->i", x[:-d], x[d:])
            cb = np.concatenate([[0.0], np.cumsum(np.exp(-np.maximum(band, 0.0) * gamma))])
            hi = idx[d:]
            pair_sum[d:] += cb[hi - d + 1] - cb[start[d:]]
        nn = n.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            within = 2.0 * pair_sum / (nn * (nn - 1.0))
        mmd2 = within + self.k_rr_ - 2.0 * mean_to_ref
        scores = np.where(n >= self.min_window, mmd2, 0.0)
        return np.maximum.accumulate(scores) if self.running_max else scores


# --------------------------------------------------------------------------- running


def default_baselines(seed: int = 0) -> list[Baseline]:
    """The four baselines with their documented defaults, unfitted."""
    return [
        RulesBaseline(),
        LogisticBaseline(seed=seed),
        PradaBaseline(),
        MMDWindowBaseline(seed=seed),
    ]


def _labelled(
    accounts: Sequence[AccountEvents],
    embeddings: Sequence[np.ndarray],
    labels: Mapping[str, Label],
) -> tuple[list[AccountEvents], list[np.ndarray], list[Label]]:
    if len(accounts) != len(embeddings):
        raise ValueError(f"{len(accounts)} accounts but {len(embeddings)} embedding arrays")
    keep = [i for i, a in enumerate(accounts) if a.account_id in labels]
    return (
        [accounts[i] for i in keep],
        [embeddings[i] for i in keep],
        [labels[accounts[i].account_id] for i in keep],
    )


def _check_names(baselines: Sequence[Baseline]) -> None:
    names = [b.name for b in baselines]
    if len(set(names)) != len(names):
        raise ValueError(f"baseline names must be unique, got {names}")


def fit_baselines(
    baselines: Sequence[Baseline],
    accounts: Sequence[AccountEvents],
    embeddings: Sequence[np.ndarray],
    labels: Mapping[str, Label],
) -> list[Baseline]:
    """Fit every baseline on the labelled accounts (unlabelled ones are left out)."""
    _check_names(baselines)
    accs, embs, labs = _labelled(accounts, embeddings, labels)
    y = [lab.label for lab in labs]
    return [b.fit(accs, embs, y) for b in baselines]


def run_baselines(
    baselines: Sequence[Baseline],
    accounts: Sequence[AccountEvents],
    embeddings: Sequence[np.ndarray],
    labels: Mapping[str, Label],
    progress: bool = False,
) -> dict[str, EvalRows]:
    """Score every labelled account with every (fitted) baseline: ``{name: EvalRows}``.

    Rows follow ``training.evaluate.score_labelled``: score = last trace value,
    ``first_flag`` against the baseline's ``threshold_``, no fleets; pass them to
    ``evaluate_rows(rows[name], baseline.threshold_)``.
    """
    from tqdm.auto import tqdm

    _check_names(baselines)
    accs, embs, labs = _labelled(accounts, embeddings, labels)
    out = {b.name: EvalRows() for b in baselines}
    for acc, emb, lab in tqdm(
        list(zip(accs, embs, labs, strict=True)), desc="baselines", disable=not progress
    ):
        for b in baselines:
            tr = b.trace(acc, emb)
            rows = out[b.name]
            rows.account_ids.append(acc.account_id)
            rows.scores.append(float(tr[-1]))
            rows.labels.append(lab.label)
            rows.kinds.append(lab.kind or ("harvest" if lab.label else "organic"))
            rows.campaigns.append(lab.campaign)
            rows.first_flag.append(first_flag_event(tr, b.threshold_))
            rows.fleet_ids.append(None)
            rows.traces.append(tr)
    return out


def holdout_baselines(
    baselines: Sequence[Baseline],
    accounts: Sequence[AccountEvents],
    embeddings: Sequence[np.ndarray],
    labels: Mapping[str, Label],
    val_fraction: float = 0.5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, EvalRows]:
    """Fit on one side of a campaign-whole split and score the other (no leaks via fleets).

    For evaluating on one labelled set alone: ``training.dataset.group_split`` keeps every
    campaign on one side; the rows cover the held-out accounts only (their ids are in
    ``rows[name].account_ids``, to compare distillwatch on the same accounts).
    """
    accs, embs, labs = _labelled(accounts, embeddings, labels)
    train_idx, val_idx = group_split(labs, val_fraction, seed)
    train = {labs[i].account_id: labs[i] for i in train_idx}
    val = {labs[i].account_id: labs[i] for i in val_idx}
    fitted = fit_baselines(baselines, accs, embs, train)
    return run_baselines(fitted, accs, embs, val, progress=progress)


__all__ = [
    "DEFAULT_TARGET_FPR",
    "Baseline",
    "LogisticBaseline",
    "MMDWindowBaseline",
    "PradaBaseline",
    "RulesBaseline",
    "default_baselines",
    "first_flag_event",
    "fit_baselines",
    "holdout_baselines",
    "run_baselines",
    "shapiro_wilk_w",
]
