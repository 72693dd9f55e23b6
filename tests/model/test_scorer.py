"""The scorer: batch and online scoring agree, a saved model reloads, output follows the contract."""

import json

import numpy as np
import pytest

from model.model_dir import ModelDirError, load_model, read_config
from model.scorer import AccountState

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
