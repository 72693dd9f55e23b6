"""Per-event features: causal, incremental, and saying what a reviewer would see."""

import hashlib
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from model import lexicon
from model.events import EventTable, read_events
from model.features import (
    _LETTERS,
    _NUM_RE,
    _WORD_RE,
    CONTEXT_FEATURES,
    FEATURE_NAMES,
    FeatureConfig,
    FeatureExtractor,
    FeatureState,
    TextFlags,
    _n_within,
    _n_within_sorted,
    wrapper_keys,
)
from model.lexicon import LexiconSet, requirement, scan_text
from model.reasons import account_stats
from model.state_codec import StateFormatError

IDX = {n: i for i, n in enumerate(FEATURE_NAMES)}
DATA_SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"
LEXICON_NAMES = ("ELICITATION", "RUBRIC", "FORMAT", "CODE", "MATH")


def _extractor(dim: int = 8, k: int = 4) -> FeatureExtractor:
    rng = np.random.default_rng(0)
    c = rng.normal(size=(k, dim)).astype(np.float32)
    config = FeatureConfig(window=8, context_reuse=True)
    return FeatureExtractor(config, c / np.linalg.norm(c, axis=1, keepdims=True))


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


def test_lexicons_answer_like_their_joined_regex() -> None:
    # the pre-checks and the match-where-the-strings-occur shortcut must never change an answer
    prompts = sorted(read_events(DATA_SAMPLES / "events.jsonl").unique_prompts())
    texts = [scan_text(p) for p in prompts[::3]]  # every length and kind, a third of them
    texts += [
        "",
        "x",
        "rate this 1 –10 please\nanswer:   ",
        "Explain why; then\n{return x;}\n" * 3,
        "ſtep by step $x^2$ \\frac{1}{2} 12 × 3 <thinking> 「json object」",
    ]
    lexicons = [getattr(lexicon, name) for name in LEXICON_NAMES]
    together = LexiconSet(lexicons)
    joined = [lexicon._compile(lx.patterns) for lx in lexicons]
    for text in texts:
        expected = tuple(j.search(text) is not None for j in joined)
        assert together.search(text) == expected, text[:80]
        assert tuple(lx.search(text) for lx in lexicons) == expected, text[:80]


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        (r"\bexplain why\b", ["explain why"]),
        (r"step[- ]by[- ]step", ["step by step", "step-by step", "step-by-step"]),
        (r"(?:reason|think) (?:it )?through", ["reason through", "think it through"]),
        (r"\d+ apples?", ["1 apple", "22 apples"]),
        (r"\$[^$]+\$", ["$x$", "$a + b$"]),
        (r"\b(?:1 ?[-–] ?(?:5|10)|one to (?:five|ten))\b", ["1 - 5", "1–10", "one to ten"]),
    ],
)
def test_requirements_are_strings_every_match_contains(pattern, matches) -> None:
    req = requirement(pattern)
    assert req is not None and req.strings
    for text in matches:
        m = re.search(pattern, text)
        assert m is not None
        assert any(s in m.group() for s in req.strings), (text, req)
        if req.prefix:
            assert any(m.group().startswith(s) for s in req.strings), (text, req)


@pytest.mark.parametrize("pattern", [r"\d+", r"(?i:abc)", r"a?b?", r"(?=abc)", r"[^a]bc?"])
def test_patterns_without_a_known_requirement_are_searched_in_full(pattern) -> None:
    req = requirement(pattern)
    assert req is None or all(s for s in req.strings)
    assert requirement("(?i)abc") is None  # case folding: ``in`` would miss "ABC"
    fast = LexiconSet([lexicon.Lexicon((pattern,))])
    for text in ("abc", "ABC", "xbc", "123", "", "bcd"):
        assert fast.search(text)[0] == (re.search(pattern, text, re.MULTILINE) is not None)


def test_word_letters_are_what_ignorecase_matched() -> None:
    every_char = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    folded = set(re.findall("[a-z]", every_char, re.IGNORECASE))
    assert set(re.findall(f"[{_LETTERS}]", every_char)) == folded


@pytest.mark.parametrize("n_words", [3, 8])
def test_wrapper_keys_of_long_texts_equal_splitting_the_whole_text(n_words: int) -> None:
    # long texts are split into words only near their ends; the keys must not notice
    from model.features import stable_hash

    rng = np.random.default_rng(5)
    vocab = ["the", "answer", "12.5", "3,000", "x", ";", "\u00a0", "\n", "ſtep", "a1b2", "…", "  "]
    for length in (30, 200, 800, 3000, 9000):
        for _ in range(20):
            seps = rng.choice([" ", "", "\t"], size=length)
            text = "".join(a + b for a, b in zip(rng.choice(vocab, size=length), seps, strict=True))
            words = _WORD_RE.findall(_NUM_RE.sub("0", scan_text(text)))
            expected = None
            if len(words) >= 3 * n_words:
                expected = (
                    stable_hash(("h", *words[:n_words])),
                    stable_hash(("t", *words[-n_words:])),
                )
            assert wrapper_keys(text, n_words) == expected


def test_burst_counts_by_binary_search_equal_counting_back() -> None:
    from collections import deque

    rng = np.random.default_rng(2)
    ts = np.cumsum(rng.choice([0.0, 1.0, 30.0, 59.999, 60.0, 61.0, 3600.0], size=600))
    recent: deque[float] = deque(maxlen=256)
    for t in ts.tolist():
        recent.append(t)
        for seconds in (60.0, 3600.0):
            assert _n_within_sorted(recent, t, seconds) == _n_within(recent, t, seconds)


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
    np.testing.assert_array_equal(np.vstack([first, second]), full)  # exact: nothing rounded
    assert state2.n == state_full.n == 20
    assert state2.counts["elicitation"] == 20
    assert account_stats(state2) == account_stats(state_full)


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


_DOC = " ".join(
    f"Clause {i}: the supplier delivers batch {i} within {i + 3} days of the written order."
    for i in range(40)
)  # about 3,300 characters of distinct sentences


def _convs(turns: list[tuple[str, str | None]]):
    """An account of ``(prompt, conversation_id)`` turns, a minute apart."""
    recs = [
        {"account_id": "a", "ts": 1.7e9 + 60.0 * i, "prompt": p, "conversation_id": c}
        for i, (p, c) in enumerate(turns)
    ]
    return next(EventTable.from_records(recs).accounts())


def _context(turns: list[tuple[str, str | None]], fx: FeatureExtractor | None = None):
    fx = fx or _extractor()
    acc = _convs(turns)
    feats, state = fx.transform(acc, _emb(len(acc)))
    return {n: feats[:, IDX[n]] for n in CONTEXT_FEATURES}, state


def test_a_document_resent_in_new_conversations_is_context_reuse() -> None:
    f, state = _context(
        [
            (f"{_DOC}\n\nWhen is batch 3 delivered?", "c1"),
            (f"Which clause covers batch 17?\n\n{_DOC}", "c2"),  # question first
            ("thanks, and what about weekends?", "c2"),
            (f"Read the document and answer: who pays?\n\n{_DOC}\n\nQuestion: who pays?", None),
        ]
    )
    assert f["context_reused"][0] == 0 and f["log_context_reused"][0] == 0
    assert f["context_reused"][1] > 0.95  # all of it but the question
    assert f["log_context_reused"][1] == pytest.approx(np.log1p(len(_DOC) - 39) / 10, abs=0.01)
    assert f["context_reused"][2] == 0  # a short follow-up
    assert f["context_reused"][3] > 0.9
    np.testing.assert_allclose(f["share_context_resent"], [0, 1 / 2, 1 / 3, 2 / 4], rtol=1e-6)
    assert state.counts["context_resent"] == 2


def test_context_sent_again_in_the_same_conversation_is_not_reuse() -> None:
    # clients that send the whole history each turn repeat it inside one conversation
    f, _ = _context([(f"{_DOC}\n\nSummarise it.", "c1"), (f"{_DOC}\n\nShorter.", "c1")])
    assert f["context_reused"].tolist() == [0, 0]
    # events without a conversation id are each a conversation of their own
    f, _ = _context([(f"{_DOC}\n\nSummarise it.", None), (f"{_DOC}\n\nShorter.", None)])
    assert f["context_reused"][1] > 0.95


def test_different_documents_in_one_wrapper_are_not_context_reuse() -> None:
    wrapper = "You are an assistant that extracts the parties and dates from a contract. "
    docs = [_DOC.replace("supplier", name) for name in ("Acme", "Globex", "Initech")]
    f, _ = _context([(wrapper + d, f"c{i}") for i, d in enumerate(docs)])
    assert f["log_context_reused"][1:].max() < np.log1p(200) / 10  # the wrapper sentence only
    assert f["share_context_resent"].max() == 0


def test_a_repeated_instruction_under_the_minimum_is_not_context_reuse() -> None:
    wrapper = "You are an assistant that extracts the parties and dates from a contract. "
    turns = [(wrapper + _DOC, "c1"), (wrapper + _DOC.replace("supplier", "Globex"), "c2")]
    turns.append((f"{_DOC}\n\nWho delivers?", "c3"))
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(4, 8)).astype(np.float32)
    for min_chars, wrapper_counts in ((0, True), (500, False)):
        config = FeatureConfig(window=8, context_reuse=True, context_min_chars=min_chars)
        fx = FeatureExtractor(config, centroids)
        f, _ = _context(turns, fx)
        assert bool(f["log_context_reused"][1] > 0) is wrapper_counts
        assert f["context_reused"][2] > 0.95  # the document of the first prompt
    with pytest.raises(ValueError, match="context_min_chars"):
        FeatureConfig(context_min_chars=-1)


def test_a_fixed_preamble_has_one_source_a_sweep_one_per_document() -> None:
    preamble = f"Examples:\n{_DOC}\n\nNow the real input.\n\n"
    f, _ = _context([(f"{preamble}Input {i}: invoice {i * 7}.", None) for i in range(6)])
    assert (f["log_context_reused"][1:] > 0).all()  # the preamble, every time
    np.testing.assert_allclose(f["log_context_sources"], [0] + [np.log1p(1) / 5] * 5, rtol=1e-6)
    docs = [_DOC.replace("supplier", name) for name in ("Acme", "Globex", "Initech")]
    sweep = [(f"{d}\n\nWhat does clause {q} say?", None) for d in docs for q in range(3)]
    f, state = _context(sweep)
    sources = np.expm1(f["log_context_sources"] * 5).round().tolist()
    assert sources == [0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert len(state.context_sources) == 3
    restored = FeatureState.from_bytes(state.to_bytes())
    assert list(restored.context_sources) == list(state.context_sources)


def test_context_reuse_remembers_a_bounded_number_of_passages(monkeypatch) -> None:
    import model.features as features

    monkeypatch.setattr(features, "MAX_CONTEXT_KEYS", 10)
    f, state = _context([(_DOC, "c1"), (_DOC, "c2")])
    assert len(state.context_keys) == 10
    assert 0 < f["context_reused"][1] < 0.5  # the 10 newest passages of the first copy only


def test_resent_documents_become_a_reason_a_reviewer_can_check() -> None:
    from model.reasons import OrganicReference

    turns = [(f"{_DOC}\n\nWhat does clause {i} say?", f"c{i}") for i in range(4)]
    _, state = _context([*turns, ("thanks!", "c9")])
    stats = account_stats(state)
    assert stats["share_context_resent"] == pytest.approx(3 / 5)
    ref = OrganicReference.fit([{**stats, "share_context_resent": 0.0}] * 10 + [stats] * 10)
    assert ref.reasons(stats) == []  # as common as in organic traffic: no reason
    ref = OrganicReference.fit([{**stats, "share_context_resent": x} for x in (0.0, 0.1, 0.2)])
    assert ref.reasons(stats) == [
        "3 of 5 prompts re-send at least 1,000 characters the account already sent in another "
        "conversation (text first sent in 1 earlier conversation) (above every organic account)"
    ]


def test_models_saved_without_context_reuse_get_the_features_they_were_trained_on() -> None:
    old = FeatureConfig.from_dict({"window": 8, "skeleton_words": 8})  # a pre-0.x config
    assert old.context_reuse is False and FeatureConfig().context_reuse is False
    assert old.names == FEATURE_NAMES[: -len(CONTEXT_FEATURES)]
    assert FeatureConfig.from_dict(FeatureConfig().to_dict()) == FeatureConfig()
    on = FeatureConfig(context_reuse=True)
    assert FeatureConfig.from_dict(on.to_dict()) == on
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(4, 8)).astype(np.float32)
    new_fx, old_fx = (
        FeatureExtractor(FeatureConfig(window=8, context_reuse=True), centroids),
        FeatureExtractor(old, centroids),
    )
    acc = _convs([(f"{_DOC} Q{i}?", f"c{i}") for i in range(3)])
    new, _ = new_fx.transform(acc, _emb(3))
    legacy, _ = old_fx.transform(acc, _emb(3))
    assert legacy.shape == (3, old_fx.n_features) == (3, len(FEATURE_NAMES) - 4)
    assert new.shape == (3, new_fx.n_features) == (3, len(FEATURE_NAMES))
    np.testing.assert_array_equal(new[:, : legacy.shape[1]], legacy)
    with pytest.raises(ValueError, match="context_reuse"):
        FeatureConfig(context_reuse="yes")  # type: ignore[arg-type]


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


def _v1_bytes(state: FeatureState) -> bytes:
    """A state as the version-1 code wrote it (``np.savez``, float16 embeddings ring)."""
    meta = {
        "config": state.config.to_dict(),
        **{k: getattr(state, k) for k in ("n_topics", "dim", "n", "last_ts", "first_ts")},
        **{k: getattr(state, k) for k in ("last_conversation", "n_emb", "conv_turns")},
        **{k: getattr(state, k) for k in ("counts", "hour_cos", "hour_sin", "ua_script")},
    }
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        recent_ts=np.asarray(state.recent_ts, dtype=np.float64),
        recent_log_gaps=np.asarray(state.recent_log_gaps, dtype=np.float64),
        recent_emb=state.recent_emb[: min(state.n_emb, state.config.window)].astype(np.float16),
        head_keys=np.array(list(state.head_keys.items()), dtype=np.int64).reshape(-1, 2),
        tail_keys=np.array(list(state.tail_keys.items()), dtype=np.int64).reshape(-1, 2),
        topic_counts=state.topic_counts,
    )
    return buf.getvalue()


def _stream(n: int = 30, docs: bool = True):
    """Scripted arithmetic prompts; with ``docs``, every 7th carries one document again."""
    prompts = [f"Solve step by step: what is {i} + {i * 3}? Final answer only." for i in range(n)]
    if docs:
        prompts[1::7] = [f"{_DOC}\n\nWhat is clause {i}?" for i in range(len(prompts[1::7]))]
    acc = _account(prompts, max_tokens=2048, conversation_id="c1", user_agent="httpx/0.27")
    return acc, _emb(n)


def test_state_bytes_restore_every_field() -> None:
    fx = _extractor()
    acc, emb = _stream()
    _, state = fx.transform(acc, emb)
    restored = FeatureState.from_bytes(state.to_bytes())
    for name in ("n", "n_emb", "last_ts", "first_ts", "last_conversation", "ua_script"):
        assert getattr(restored, name) == getattr(state, name), name
    assert restored.counts == state.counts
    assert list(restored.conv_turns.items()) == list(state.conv_turns.items())  # eviction order
    assert restored.head_keys == state.head_keys and restored.tail_keys == state.tail_keys
    assert list(restored.context_keys.items()) == list(state.context_keys.items())
    assert len(state.context_keys) > 0
    assert list(restored.recent_ts) == list(state.recent_ts)
    assert list(restored.recent_log_gaps) == list(state.recent_log_gaps)
    np.testing.assert_array_equal(restored.recent_emb, state.recent_emb)
    np.testing.assert_array_equal(restored.topic_counts, state.topic_counts)


def test_ring_stored_beside_the_state_slot_by_slot_restores_it_exactly() -> None:
    fx = _extractor()  # window 8: 30 prompts wrap the ring more than three times
    acc, emb = _stream()
    full, full_state = fx.transform(acc, emb)
    _, state = fx.transform(acc.head(5), emb[:5])
    stored = dict(state.ring_rows())  # slot -> bytes, as the service's ring table keeps them
    assert sorted(stored) == list(range(5))
    for lo, hi in ((5, 6), (6, 17), (17, 30)):  # each update writes only the slots it changed
        blob = state.to_bytes(ring=False)
        assert FeatureState.ring_is_external(blob) and len(blob) < len(state.to_bytes())
        state = FeatureState.from_bytes(blob, list(stored.items()))
        since = state.n_emb
        rows, state = fx.transform(acc.slice(lo, hi), emb[lo:hi], state)
        np.testing.assert_array_equal(rows, full[lo:hi])
        changed = state.ring_rows(since)
        assert len(changed) == min(hi - lo, 8)
        stored.update(changed)
    restored = FeatureState.from_bytes(state.to_bytes(ring=False), list(stored.items()))
    np.testing.assert_array_equal(restored.recent_emb, full_state.recent_emb)
    assert not FeatureState.ring_is_external(full_state.to_bytes())
    with pytest.raises(StateFormatError, match="without its embeddings ring"):
        FeatureState.from_bytes(state.to_bytes(ring=False))
    with pytest.raises(StateFormatError, match=r"ring slots \[3\] are missing"):
        FeatureState.from_bytes(
            state.to_bytes(ring=False), [r for r in stored.items() if r[0] != 3]
        )
    with pytest.raises(StateFormatError, match="does not fit"):
        FeatureState.from_bytes(state.to_bytes(ring=False), [(9, stored[0])])


def test_version_1_states_are_still_read() -> None:
    fx = _extractor()
    acc, emb = _stream(docs=False)  # version 1 predates context reuse
    full, _ = fx.transform(acc, emb)
    _, state = fx.transform(acc.head(12), emb[:12])
    old = FeatureState.from_bytes(_v1_bytes(state))
    rest, old_after = fx.transform(acc.slice(12, 30), emb[12:], old)
    np.testing.assert_allclose(rest, full[12:], atol=1e-3)  # version 1 kept float16 vectors
    assert old_after.n == 30 and old_after.counts["elicitation"] == 30


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"DWFS" + struct.pack("<HI", 9, 2) + b"{}", "version 9, this distillwatch reads 2"),
        (b"DWAS" + struct.pack("<HI", 2, 2) + b"{}", "not a distillwatch feature state"),
        (b"DW", "too short"),
        (b"DWFS" + struct.pack("<HI", 2, 5) + b"{oops", "corrupt"),
    ],
)
def test_unreadable_states_are_rejected_clearly(blob: bytes, message: str) -> None:
    with pytest.raises(StateFormatError, match=message):
        FeatureState.from_bytes(blob)


def test_truncated_state_is_rejected() -> None:
    fx = _extractor()
    acc, emb = _stream(5)
    data = fx.transform(acc, emb)[1].to_bytes()
    with pytest.raises(StateFormatError, match=r"truncated|trailing"):
        FeatureState.from_bytes(data[:-7])


# Reference values computed with the feature code before its speed-ups (commit 2610207): a
# speed-up must not move any value. Columns that come out of a BLAS product are pinned by
# their sums (another CPU may round a product in its last bit); all others bit for bit. If you
# change a feature's definition on purpose, put the values this test reports here.
_BLAS_COLUMNS = (
    "max_sim_prev",
    "mean_sim_prev",
    "near_duplicate",
    "share_near_duplicate",
    "topic_new",
    "topics_covered",
    "topic_entropy",
)
_PINNED_FEATURES_SHA = "0a9e81ecceb52e6e8e5bb6438cb9dbbb38a7049a5bd9a0a9c35c86bc00a69c05"
_PINNED_CONTEXT_SHA = "6ff65cf899ad60fff67858c19f5cdfc6b969aa29d3dcb31ec73e1786843630f5"
_PINNED_SUMS = {
    "max_sim_prev": 578.7282415688969,
    "mean_sim_prev": 233.22860623599263,
    "near_duplicate": 45.0,
    "share_near_duplicate": 29.880852117203176,
    "topic_new": 436.0,
    "topics_covered": 1670.3419505357742,
    "topic_entropy": 1347.6074557881802,
}
_UNPINNED_STATS = (
    "topics_covered",
    "share_context_resent",
    "context_resent_prompts",
    "context_sources",
)
_PINNED_STATS_SHA = "a80184a969e281937c8a21f287aef2abbc9f58c6c3c1737a34f2cc9949a0d248"
_PINNED_TEXT_SHA = "4430a9bcbc8abcc5c0e41ad7d93b6b5269d4c712315431dbcacb5837f7583055"


def test_feature_values_are_pinned(hashing_embedder) -> None:
    table = read_events(DATA_SAMPLES / "events.jsonl")
    accounts = list(table.accounts())[::5]
    texts = sorted({p for a in accounts for p in a.prompts})
    vecs = dict(zip(texts, hashing_embedder.encode(texts), strict=True))
    centroids = np.stack([vecs[t] for t in texts[:: len(texts) // 12][:12]])
    fx = FeatureExtractor(FeatureConfig(window=16, gap_window=8, context_reuse=True), centroids)
    rows, stats = [], []
    for i, acc in enumerate(accounts):
        emb = np.stack([vecs[p] for p in acc.prompts])
        if i % 4 == 3 and len(acc) > 1:  # late events: the newer half arrives first
            half = len(acc) // 2
            newer, state = fx.transform(acc.slice(half, len(acc)), emb[half:])
            older, state = fx.transform(acc.slice(0, half), emb[:half], state)
            feats = np.vstack([newer, older])
        else:
            feats, state = fx.transform(acc, emb)
        rows.append(feats)
        stats.append(account_stats(state))
    feats = np.vstack(rows)
    exact = [
        j
        for j, name in enumerate(FEATURE_NAMES)
        if name not in _BLAS_COLUMNS and name not in CONTEXT_FEATURES
    ]
    digest = hashlib.sha256(np.ascontiguousarray(feats[:, exact]).tobytes()).hexdigest()
    context = [FEATURE_NAMES.index(n) for n in CONTEXT_FEATURES]
    context_digest = hashlib.sha256(np.ascontiguousarray(feats[:, context]).tobytes()).hexdigest()
    sums = {n: float(feats[:, IDX[n]].astype(np.float64).sum()) for n in _BLAS_COLUMNS}
    stats_json = json.dumps(
        [  # the context-reuse statistics are pinned by their feature column
            {k: round(v, 9) for k, v in s.items() if k not in _UNPINNED_STATS} for s in stats
        ],
        sort_keys=True,
    )
    report = f"features {digest}, context {context_digest}, sums {sums}"
    assert digest == _PINNED_FEATURES_SHA, report
    assert context_digest == _PINNED_CONTEXT_SHA, report
    assert sums == pytest.approx(_PINNED_SUMS, rel=1e-6, abs=1e-9), report
    assert hashlib.sha256(stats_json.encode()).hexdigest() == _PINNED_STATS_SHA

    extra = [
        "A" * 5000 + " step by step " + "z " * 3000,
        "İstanbul ſtep by ſtep 1.5,3 ×2 " * 300,
        "",
        "Final Answer: 42\n####",
    ]
    facts = [
        (sorted(vars(TextFlags.of(t)).items()), wrapper_keys(t), wrapper_keys(t, 3))
        for t in sorted(table.unique_prompts()) + extra
    ]
    text_digest = hashlib.sha256(json.dumps(facts).encode()).hexdigest()
    assert text_digest == _PINNED_TEXT_SHA, f"text facts {text_digest}"
