"""Per-event features: causal, incremental, and saying what a reviewer would see."""

import numpy as np
import pytest

from model.events import EventTable
from model.features import (
    FEATURE_NAMES,
    FeatureConfig,
    FeatureExtractor,
    FeatureState,
    TextFlags,
    wrapper_keys,
)
from model.lexicon import (
    ELICITATION,
    ELICITATION_PATTERNS,
    FORMAT,
    FORMAT_PATTERNS,
    RUBRIC,
    RUBRIC_PATTERNS,
)

IDX = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _extractor(dim: int = 8, k: int = 4) -> FeatureExtractor:
    rng = np.random.default_rng(0)
    c = rng.normal(size=(k, dim)).astype(np.float32)
    return FeatureExtractor(FeatureConfig(window=8), c / np.linalg.norm(c, axis=1, keepdims=True))


def _account(prompts: list[str], gaps: list[float] | None = None, **extra: object):
    ts = np.cumsum([0.0] + (gaps or [60.0] * (len(prompts) - 1)))
    recs = [
        {"account_id": "a", "ts": 1.7e9 + t, "prompt": p, **extra}
        for t, p in zip(ts, prompts, strict=False)
    ]
    return next(EventTable.from_records(recs).accounts())


def _emb(n: int, dim: int = 8, seed: int = 1) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "text",
    [
        "Solve this. Let's think step by step.",
        "Please show your work before the final answer",
        "Walk me through how you would derive it",
        "Justify each step you take.",
        "Explain your reasoning, then answer",
    ],
)
def test_elicitation_phrasings_are_caught(text: str) -> None:
    assert TextFlags.of(text).elicitation


def test_plain_chat_is_not_elicitation() -> None:
    flags = TextFlags.of("what's a good name for a golden retriever puppy?")
    assert not (flags.elicitation or flags.rubric or flags.answer_format)


def test_rubric_and_format_flags() -> None:
    assert TextFlags.of("Grade this answer on a 1-10 rubric").rubric
    assert TextFlags.of("Put your final answer in \\boxed{}").answer_format


@pytest.mark.parametrize(
    ("lexicon", "patterns"),
    [(ELICITATION, ELICITATION_PATTERNS), (RUBRIC, RUBRIC_PATTERNS), (FORMAT, FORMAT_PATTERNS)],
)
def test_trigger_prefilter_never_hides_a_pattern(lexicon, patterns) -> None:
    # every literal example built from a pattern's own words must pass the pre-check
    import re

    for p in patterns:
        literal = re.sub(r"\\[bsdw]|[()?:*+^$|\[\]]", " ", p).replace("\\", "")
        assert any(t in p or t in literal for t in lexicon.triggers), p


def test_features_are_causal() -> None:
    fx = _extractor()
    prompts = [f"question number {i} about apples" for i in range(12)]
    acc = _account(prompts)
    emb = _emb(12)
    full, _ = fx.transform(acc, emb)
    prefix, _ = fx.transform(acc.head(7), emb[:7])
    np.testing.assert_allclose(full[:7], prefix)


def test_incremental_state_roundtrip_equals_batch() -> None:
    fx = _extractor()
    prompts = [
        f"Solve step by step: what is {i} + {i * 3}? Give the final answer." for i in range(20)
    ]
    acc = _account(prompts, max_tokens=2048, conversation_id="c1")
    emb = _emb(20)
    full, state_full = fx.transform(acc, emb)
    first, state = fx.transform(acc.head(9), emb[:9])
    restored = FeatureState.from_bytes(state.to_bytes())
    second, state2 = fx.transform(acc.slice(9, 20), emb[9:], restored)
    np.testing.assert_allclose(np.vstack([first, second]), full, atol=1e-3)
    assert state2.n == state_full.n == 20
    assert state2.counts["elicitation"] == 20


def test_template_reuse_and_near_duplicates_are_seen() -> None:
    fx = _extractor()
    wrapper = "You are an expert tutor. Solve the problem below and explain your reasoning in detail. {} Return only the final answer after your reasoning as a single line please."
    prompts = [
        wrapper.format(f"Problem: a train leaves at {i} pm going {i * 7} km/h") for i in range(6)
    ]
    acc = _account(prompts)
    emb = np.repeat(_emb(1), 6, axis=0)
    feats, _state = fx.transform(acc, emb)
    assert feats[0, IDX["template_reused"]] == 0
    assert feats[1:, IDX["template_reused"]].all()
    assert feats[1:, IDX["near_duplicate"]].all()
    assert wrapper_keys(prompts[0]) is not None


def test_timing_features_tell_scripts_from_people() -> None:
    fx = _extractor()
    prompts = [f"item {i} text text text" for i in range(30)]
    script, _ = fx.transform(_account(prompts, [2.0] * 29), _emb(30))
    human_gaps = list(np.random.default_rng(3).lognormal(5, 1.5, 29))
    human, _ = fx.transform(_account(prompts, human_gaps), _emb(30))
    assert script[-1, IDX["burst_60s"]] > human[-1, IDX["burst_60s"]]
    assert script[-1, IDX["gap_regularity"]] < human[-1, IDX["gap_regularity"]]


def test_mismatched_embeddings_raise() -> None:
    fx = _extractor()
    with pytest.raises(ValueError, match="embeddings"):
        fx.transform(_account(["a", "b"]), _emb(3))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="window"):
        FeatureConfig(window=0)
