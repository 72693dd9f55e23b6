"""The scorer: batch and online scoring agree, a saved model reloads, output follows the contract."""

import io
import json
import struct

import numpy as np
import pytest

from model.model_dir import ModelDirError, load_model, read_config
from model.scorer import AccountState
from model.state_codec import StateFormatError

CONTRACT_FIELDS = {
    "account_id",
    "score",
    "flagged",
    "n_events",
    "first_flag_event",
    "fleet_id",
    "reasons",
}


def test_score_output_follows_the_contract(tiny_detector, sim_table) -> None:
    scores = tiny_detector.score_table(sim_table)
    assert len(scores) == sim_table.n_accounts
    for s in scores:
        d = s.to_dict()
        assert set(d) == CONTRACT_FIELDS
        assert 0.0 <= d["score"] <= 1.0
        assert d["flagged"] == (d["score"] >= tiny_detector.threshold)
        if d["first_flag_event"] is not None:
            assert 1 <= d["first_flag_event"] <= d["n_events"]
        if d["flagged"]:
            assert d["reasons"], "a flagged account must carry evidence"
        json.dumps(d)


def test_online_updates_equal_batch_scoring(tiny_detector, sim_table) -> None:
    accounts = [a for a in sim_table.accounts() if len(a) >= 12][:5]
    batch = tiny_detector.score_accounts(accounts)
    for acc, expected in zip(accounts, batch, strict=True):
        state = None
        for start, stop in ((0, 1), (1, 5), (5, len(acc))):
            if state is not None:  # through the store's serialization, as the service does
                state = AccountState.from_bytes(state.to_bytes())
            state, score = tiny_detector.update(state, acc.slice(start, stop))
        assert score.n_events == expected.n_events
        assert score.score == pytest.approx(expected.score, abs=1e-4)
        assert score.first_flag_event == expected.first_flag_event


def test_first_flag_event_is_where_the_online_score_crosses(tiny_detector, sim_table) -> None:
    for acc in list(sim_table.accounts())[:40]:
        trace = tiny_detector.trace(acc)
        s = tiny_detector.account_score(trace)
        above = np.flatnonzero(trace.probs >= tiny_detector.threshold)
        assert s.first_flag_event == (int(above[0]) + 1 if len(above) else None)


def test_model_directory_is_self_contained(tiny_model_dir) -> None:
    config = read_config(tiny_model_dir)
    for key in (
        "version",
        "embedder",
        "features",
        "network",
        "threshold",
        "calibration",
        "training",
    ):
        assert key in config
    assert (tiny_model_dir / "README.md").read_text().startswith("# distillwatch detector")
    assert (
        json.loads((tiny_model_dir / "metrics.json").read_text())["validation"]["auroc"] is not None
    )


def test_broken_model_directories_give_clear_errors(tmp_path, tiny_model_dir) -> None:
    with pytest.raises(ModelDirError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="missing"):
        load_model(tmp_path / "empty")
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(ModelDirError, match="weights"):
        load_model(bad)


def test_a_restored_account_scores_exactly_like_the_live_one(tiny_detector, sim_table) -> None:
    # what a restarted service (state read back from its store) must answer
    accounts = [a for a in sim_table.accounts() if len(a) >= 12][:6]
    for acc in accounts:
        live = stored = None
        for start, stop in ((0, 1), (1, 4), (4, 9), (9, len(acc))):
            part = acc.slice(start, stop)
            live, live_score = tiny_detector.update(live, part)
            restored = None if stored is None else AccountState.from_bytes(stored)
            restored, restored_score = tiny_detector.update(restored, part)
            stored = restored.to_bytes()
            assert restored_score.to_dict() == live_score.to_dict()
            assert restored.last_prob == live.last_prob


def _v1_account_bytes(state: AccountState) -> bytes:
    """An account state as the version-1 code wrote it (``np.savez``)."""
    from tests.model.test_features import _v1_bytes

    buf = io.BytesIO()
    np.savez(
        buf,
        features=np.frombuffer(_v1_bytes(state.features), dtype=np.uint8),
        hidden=state.net.hidden.numpy(),
        ev_max=state.net.ev_max.numpy(),
        ev_sum=state.net.ev_sum.numpy(),
        n_seen=state.net.n_seen.numpy(),
        scalars=np.array(
            [state.n_events, state.first_flag_event or -1, state.last_prob], dtype=np.float64
        ),
    )
    return buf.getvalue()


def test_version_1_account_states_are_migrated(tiny_detector, sim_table) -> None:
    acc = next(a for a in sim_table.accounts() if len(a) >= 12)
    state, _ = tiny_detector.update(None, acc.head(6))
    old = AccountState.from_bytes(_v1_account_bytes(state))
    assert old.n_events == 6 and old.first_flag_event == state.first_flag_event
    _, from_old = tiny_detector.update(old, acc.slice(6, len(acc)))
    _, from_live = tiny_detector.update(state, acc.slice(6, len(acc)))
    assert from_old.n_events == from_live.n_events == len(acc)
    assert from_old.score == pytest.approx(from_live.score, abs=1e-3)  # v1 kept float16


def test_unreadable_account_states_are_rejected_clearly(tiny_detector, sim_table) -> None:
    acc = next(iter(sim_table.accounts()))
    data = tiny_detector.update(None, acc)[0].to_bytes()
    newer = data[:4] + struct.pack("<H", 3) + data[6:]
    with pytest.raises(StateFormatError, match=r"version 3.*newer distillwatch"):
        AccountState.from_bytes(newer)
    with pytest.raises(StateFormatError, match="not a distillwatch account state"):
        AccountState.from_bytes(b"\x00" * 64)


def test_scoring_leaves_the_thread_settings_as_it_found_them(tiny_detector, sim_table) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tiny_detector.score_accounts(list(sim_table.accounts())[:5])
        tiny_detector.update(None, next(iter(sim_table.accounts())))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_prompt_positions_name_the_strongest_prompts_first() -> None:
    from model.reasons import prompt_positions

    probs = np.array([0.1, 0.9, 0.2, 0.6, 0.95, 0.7, 0.8, 0.55, 0.51])
    assert prompt_positions(probs) == "prompts 5, 2, 7, 6, 4 and 2 more"
    assert prompt_positions(np.array([0.2, 0.7])) == "prompt 2"
    assert prompt_positions(np.array([0.6, 0.7])) == "prompts 2 and 1"
    assert prompt_positions(np.array([0.1, 0.2])) is None


def test_a_share_reason_never_reads_the_same_as_its_organic_reference() -> None:
    from model.reasons import OrganicReference

    ref = OrganicReference({"share_rubric": [0.0] * 95 + [0.0101] * 3 + [0.02] * 3})
    stats = {"n_events": 200.0, "share_rubric": 0.0140}
    (reason,) = ref.reasons(stats)
    assert reason == "grading / rubric requests in 1.4% of prompts (organic p95: 1.0%)"


@pytest.mark.parametrize(
    ("n", "hours", "text"),
    [
        (120, 0.004, "120 prompts in 14 s"),
        (120, 0.2, "120 prompts in 12 min"),
        (300, 2.5, "300 prompts in 2.5 h (120 per hour)"),
        (900, 100.0, "900 prompts in 4.2 days (9 per hour)"),
    ],
)
def test_a_rate_reason_states_the_span_it_counts(n: int, hours: float, text: str) -> None:
    from model.reasons import OrganicReference

    rate = n / max(hours, 1.0)
    ref = OrganicReference({"events_per_active_hour": [1.0] * 100})
    stats = {"n_events": float(n), "events_per_active_hour": rate, "span_hours": hours}
    (reason,) = ref.reasons(stats)
    assert reason.startswith(text + " (")  # then the organic comparison
    quiet = OrganicReference({"events_per_active_hour": [1.0] * 96 + [2.0] * 5})
    (reason,) = quiet.reasons({**stats, "events_per_active_hour": 1.5})
    assert reason.endswith("(organic p95: 1.0 per hour)")


def test_the_round_the_clock_reason_gives_the_spread_it_compares() -> None:
    from model.reasons import OrganicReference

    ref = OrganicReference({"round_the_clock": [0.1] * 96 + [0.55] * 5})
    (reason,) = ref.reasons({"n_events": 50.0, "round_the_clock": 0.93})
    assert "hour-of-day spread 0.93" in reason
    assert reason.endswith("(above every organic account)")
    (reason,) = ref.reasons({"n_events": 50.0, "round_the_clock": 0.3})
    assert "hour-of-day spread 0.30" in reason
    assert reason.endswith("(organic p95: 0.10)")


def test_an_embed_backend_override_needs_a_sentence_transformers_encoder(tiny_model_dir) -> None:
    from model.model_dir import ModelDirError, load_model

    with pytest.raises(ModelDirError, match="hashing embedder has no backends"):
        load_model(tiny_model_dir, embed_backend="onnx-int8")
