"""Held-out protocol: the card's simulations and experiments, run end to end at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from model.embedder import HashingEmbedder
from model.embedding_cache import EmbeddingCache
from training.corpora import Corpora, Family, default_corpora_dir
from training.heldout import (
    FOLD_A,
    FOLD_B,
    PROBE_KIND_MIX,
    TINY_FOLD_A,
    TINY_FOLD_B,
    Protocol,
    SimSpec,
    build_parser,
    load_results,
    load_seed_results,
    load_simulation,
    main,
    merge_simulations,
    protocol_from_args,
    render_card_sections,
    render_seed_spread,
    run_heldout,
    run_seeds,
    select_experiments,
    training_subset,
)

#: One experiment of each group: (a), one held-out kind of (b), one fold of (c).
ONLY = ("a", "loko_cot_harvest", "foldA")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, hashing_embedder) -> SimpleNamespace:
    # its own embedder with a cache, so that what was embedded can be counted
    embedder = HashingEmbedder(**hashing_embedder.to_dict(), cache=EmbeddingCache.memory())
    out = tmp_path_factory.mktemp("heldout")
    protocol = Protocol.tiny()
    results = run_heldout(
        default_corpora_dir(),
        out,
        embedder,
        {"kind": "hashing", **embedder.to_dict()},
        protocol=protocol,
        only=ONLY,
        progress=False,
    )
    return SimpleNamespace(out=out, results=results, embedder=embedder, protocol=protocol)


def _sim(run: SimpleNamespace, name: str):
    return load_simulation(run.protocol.sims()[name], default_corpora_dir(), run.out / "sims")


# --------------------------------------------------------------------------- the protocol


def test_default_protocol_is_the_model_cards() -> None:
    p = Protocol()
    assert p.sims() == {
        "train": SimSpec("train", 1200, 11, 120, 0.5),
        "test": SimSpec("test", 500, 22, 150),
        "trainL": SimSpec("trainL", 1200, 13, 300),
        "trainA": SimSpec("trainA", 1200, 31, 100, 0.5, exclude_sources=FOLD_A),
        "testA": SimSpec("testA", 900, 32, 120, exclude_sources=FOLD_B),
        "trainB": SimSpec("trainB", 1200, 41, 100, 0.5, exclude_sources=FOLD_B),
        "testB": SimSpec("testB", 900, 42, 120, exclude_sources=FOLD_A),
        "testK": SimSpec("testK", 1600, 23, 150, kind_mix=tuple(PROBE_KIND_MIX.items())),
    }
    exps = {e.name: e for e in p.experiments()}
    assert list(exps) == [
        "pool",
        "loko_cot_harvest",
        "loko_capability_sweep",
        "loko_longctx_sweep",
        "loko_slow_drip",
        "loko_hydra_fleet",
        "foldA",
        "foldB",
    ]
    pool, loko = exps["pool"].config, exps["loko_slow_drip"].config
    assert (pool.seed, pool.max_epochs, pool.patience) == (1, 25, 4)
    assert (loko.seed, loko.max_epochs, loko.patience) == (1, 15, 4)
    assert (exps["loko_slow_drip"].subset_accounts, exps["loko_slow_drip"].subset_seed) == (2400, 0)
    assert (exps["pool"].train.name, exps["pool"].test.name) == ("train", "test")
    assert [s.name for s in exps["pool"].extra_train] == ["trainL"]  # longer organic streams
    assert [s.name for s in exps["loko_slow_drip"].extra_train] == ["trainL"]
    assert (exps["foldB"].train.name, exps["foldB"].test.name) == ("trainB", "testB")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"test_seed": 11}, "train and test share seed 11"),
        ({"fold_b_seeds": (41, 31)}, "trainA and testB share seed 31"),
        ({"train_cap": 0}, "train_cap"),
        ({"fold_a_seeds": (31,)}, "fold_a_seeds"),
        ({"fold_b": ("bbh:navigate", "math")}, "disjoint"),
        ({"fold_a": ()}, "fold_a"),
        ({"loko_kinds": ("organic_casual",)}, "loko_kinds"),
        ({"loko_accounts": 5000}, "loko_accounts"),
        ({"train_volume_scale": 0}, "train_volume_scale"),
    ],
)
def test_protocol_rejects_bad_settings(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Protocol(**overrides)


def test_experiments_are_chosen_by_group_or_name() -> None:
    p = Protocol.tiny()
    assert [e.name for e in select_experiments(p, ["foldA", "a"])] == ["pool", "foldA"]
    assert [e.held_out_kind for e in select_experiments(p, ["b"])] == list(p.loko_kinds)
    with pytest.raises(ValueError, match="unknown experiment 'd'"):
        select_experiments(p, ["a", "d"])


# --------------------------------------------------------------------------- simulations


def test_simulations_are_capped_and_reused_until_their_spec_changes(tmp_path: Path) -> None:
    spec = SimSpec("train", accounts=20, seed=5, cap=10)
    table, labels = load_simulation(spec, default_corpora_dir(), tmp_path)
    assert set(table.account_ids) == set(labels) and len(labels) == 20
    assert max(len(a) for a in table.accounts()) == 10
    events = tmp_path / "train" / "events.jsonl"
    written = events.stat().st_mtime_ns
    load_simulation(SimSpec("train", accounts=20, seed=5, cap=5), default_corpora_dir(), tmp_path)
    assert events.stat().st_mtime_ns == written  # a new cap needs no new simulation
    _, relabelled = load_simulation(
        SimSpec("train", accounts=20, seed=6, cap=10), default_corpora_dir(), tmp_path
    )
    assert set(relabelled).isdisjoint(labels)


def test_train_and_test_simulations_are_disjoint(run) -> None:
    for result in run.results.values():
        assert result["train_sim"]["seed"] != result["test_sim"]["seed"]
    for train, test in (("train", "test"), ("trainA", "testA")):
        assert set(_sim(run, train)[1]).isdisjoint(_sim(run, test)[1])


def test_fold_a_is_held_out_of_training_and_is_all_the_test_probes(run) -> None:
    def fold_texts(sources: tuple[str, ...]) -> list[str]:
        corpora = Corpora.load(include_sources=sources)
        fams: tuple[Family, ...] = ("probe_math", "probe_code", "probe_reasoning")
        return [r.text for f in fams for r in corpora.family(f) if len(r.text) >= 40]

    def with_text(sim: str, texts: list[str]) -> int:
        return sum(any(t in p for t in texts) for p in _sim(run, sim)[0].unique_prompts())

    fold_a, fold_b = fold_texts(TINY_FOLD_A), fold_texts(TINY_FOLD_B)
    assert with_text("trainA", fold_a) == 0
    assert with_text("testA", fold_a) > 0
    assert with_text("testA", fold_b) == 0


# --------------------------------------------------------------------------- experiments


def test_every_experiment_writes_its_json_and_model(run) -> None:
    assert set(run.results) == {"pool", "loko_cot_harvest", "foldA"}
    assert load_results(run.out) == json.loads(json.dumps(run.results))
    n_test = {"pool": 40, "loko_cot_harvest": 40, "foldA": 30}
    for name, result in run.results.items():
        metrics = result[result["test_sim"]["name"]]
        assert metrics["n_accounts"] == n_test[name]
        assert 0.0 <= metrics["auroc"] <= 1.0
        assert result["protocol"] == run.protocol.to_dict()
        assert (run.out / "models" / name / "config.json").is_file()
    assert run.results["foldA"]["test_sim"]["name"] == "testA"
    assert run.results["foldA"]["held_out_sources"] == list(TINY_FOLD_A)
    assert (run.out / "card.md").read_text().startswith("## Held-out evaluation")


def test_held_out_kind_is_absent_from_training_but_judged(run) -> None:
    loko, pool = run.results["loko_cot_harvest"], run.results["pool"]
    assert "cot_harvest" not in loko["training"]["kinds"]
    assert "cot_harvest" in pool["training"]["kinds"]
    assert loko["training"]["n_accounts"] < run.protocol.loko_accounts
    assert loko["test"]["per_kind"]["cot_harvest"]["n"] > 0
    assert loko["training"]["config"]["max_epochs"] == run.protocol.loko_max_epochs

    table, labels = merge_simulations([_sim(run, "train"), _sim(run, "trainL")])
    sub_table, sub = training_subset(
        table, labels, n_accounts=50, seed=0, drop_kinds=["cot_harvest"]
    )
    assert sub_table.account_ids == sorted(sub)
    assert {lab.kind for lab in sub.values()} - {"cot_harvest"} == {
        lab.kind for lab in sub.values()
    }
    assert len(sub) == loko["training"]["n_accounts"]
    again = training_subset(table, labels, n_accounts=50, seed=0, drop_kinds=["cot_harvest"])[1]
    assert again == sub
    other = training_subset(table, labels, n_accounts=50, seed=1)[1]
    assert set(other) != set(sub)


def test_leave_one_kind_out_is_also_judged_with_the_probe_simulation(run) -> None:
    loko = run.results["loko_cot_harvest"]
    test_labels = _sim(run, "test")[1]
    probe_labels = _sim(run, "testK")[1]
    assert [s["name"] for s in loko["extra_test_sims"]] == ["testK"]
    joined = loko["test+testK"]
    assert joined["n_accounts"] == len(test_labels) + len(probe_labels)
    assert loko["test"]["n_accounts"] == len(test_labels)
    n_test = sum(lab.kind == "cot_harvest" for lab in test_labels.values())
    n_probe = sum(lab.kind == "cot_harvest" for lab in probe_labels.values())
    cot = joined["per_kind"]["cot_harvest"]
    assert cot["n"] == n_test + n_probe and n_probe > 0
    low, high = cot["recall_at_1pct_fpr_ci95"]
    assert 0 <= low <= cot["recall_at_1pct_fpr"] <= high <= 1
    # the probe's mix: every mixed harvesting kind at one weight, the organic mix kept
    kinds = {lab.kind for lab in probe_labels.values()}
    assert {"longctx_sweep", "slow_drip", "organic_eval_team"} <= kinds
    # (a) is judged with the probe too, (c) on its own test simulation alone
    pool = run.results["pool"]["test+testK"]
    assert pool["n_accounts"] == joined["n_accounts"]
    slow = pool["per_kind"]["slow_drip"]
    s_low, s_high = slow["recall_at_1pct_fpr_ci95"]
    assert (
        f"| slow_drip | {slow['n']} | recall {slow['recall_at_1pct_fpr']:.3f} "
        f"({s_low:.2f}-{s_high:.2f}) / {slow['recall_at_threshold']:.3f} |"
    ) in render_card_sections(run.results)
    assert run.results["foldA"]["extra_test_sims"] == []
    assert "testA+testK" not in run.results["foldA"]
    card = render_card_sections(run.results)
    assert "| held-out kind | its accounts | its recall at 1 % FPR (95 % interval) |" in card
    assert (
        f"| cot_harvest | {cot['n']} | {cot['recall_at_1pct_fpr']:.3f} ({low:.2f}-{high:.2f}) |"
    ) in card


def test_judge_only_rejudges_earlier_models_without_training(
    run, tmp_path: Path, hashing_embedder
) -> None:
    import shutil

    out = tmp_path / "again"
    shutil.copytree(run.out, out)
    before = json.loads((out / "results" / "loko_cot_harvest.json").read_text())
    del before["test+testK"]  # as an earlier run without the probe wrote it
    before["extra_test_sims"] = []
    (out / "results" / "loko_cot_harvest.json").write_text(json.dumps(before))
    weights = (out / "models" / "loko_cot_harvest" / "weights.pt").read_bytes()
    again = run_heldout(
        default_corpora_dir(),
        out,
        hashing_embedder,
        {"kind": "hashing", **hashing_embedder.to_dict()},
        protocol=run.protocol,
        only=["loko_cot_harvest"],
        progress=False,
        judge_only=True,
    )["loko_cot_harvest"]
    original = run.results["loko_cot_harvest"]
    assert again["test+testK"] == original["test+testK"]  # the same model, the same figures
    assert again["test"] == original["test"]
    assert again["training"] == before["training"] and "judged_again" in again
    assert (out / "models" / "loko_cot_harvest" / "weights.pt").read_bytes() == weights
    assert json.loads((out / "results" / "loko_cot_harvest.json").read_text()) == again
    with pytest.raises(FileNotFoundError, match="loko_slow_drip: no earlier run"):
        run_heldout(
            default_corpora_dir(),
            out,
            hashing_embedder,
            {},
            protocol=run.protocol,
            only=["loko_slow_drip"],
            progress=False,
            judge_only=True,
        )
    other = Protocol.tiny(test_seed=99)
    with pytest.raises(ValueError, match="would mix protocols"):
        run_heldout(
            default_corpora_dir(),
            out,
            hashing_embedder,
            {},
            protocol=other,
            only=["loko_cot_harvest"],
            progress=False,
            judge_only=True,
        )


def test_sim_spec_kind_mix_is_checked_and_absent_from_default_stamps(tmp_path: Path) -> None:
    default = SimSpec("s", 20, 5, 10)
    assert "kind_mix" not in default.stamp(tmp_path)  # earlier runs' files stay valid
    mixed = SimSpec("s", 20, 5, 10, kind_mix=(("slow_drip", 1.0), ("organic_casual", 1)))
    assert mixed.stamp(tmp_path)["kind_mix"] == {"organic_casual": 1.0, "slow_drip": 1.0}
    labels = load_simulation(mixed, default_corpora_dir(), tmp_path)[1]
    assert {lab.kind for lab in labels.values()} <= {"organic_casual", "slow_drip", "hydra_fleet"}
    for bad in ((("organic_nobody", 1.0),), (("slow_drip", -1.0),), (("slow_drip", 0.0),)):
        with pytest.raises(ValueError, match="kind_mix"):
            SimSpec("s", 20, 5, 10, kind_mix=bad)


def test_merging_simulations_that_share_accounts_is_an_error(run) -> None:
    with pytest.raises(ValueError, match="share 40 account ids"):
        merge_simulations([_sim(run, "test"), _sim(run, "test")])


def test_no_text_is_embedded_twice(run) -> None:
    texts: set[str] = set()
    for sim in ("train", "trainL", "test", "testK", "trainA", "testA"):
        texts.update(_sim(run, sim)[0].unique_prompts())
    assert run.embedder.stats.embedded == len(texts)
    assert run.embedder.stats.cache_hits > 0


# --------------------------------------------------------------------------- the card


def test_card_sections_hold_the_three_tables(run) -> None:
    card = render_card_sections(run.results)
    pool = run.results["pool"]["test"]
    loko = run.results["loko_cot_harvest"]["test"]
    fold = run.results["foldA"]["testA"]
    assert "### (a) Unseen seed" in card
    assert "`--accounts 40 --seed 22` (first 30 events per account" in card
    assert f"| auroc | {pool['auroc']:.3f} |" in card
    assert "| kind | n | recall at 1 % FPR / FPR at threshold |" in card
    assert "### (b) Leave one harvesting kind out" in card
    assert "trained on 50 accounts of the training simulations" in card
    cot = loko["per_kind"]["cot_harvest"]
    assert (
        f"| cot_harvest | {cot['recall_at_1pct_fpr']:.3f} | {cot['recall_at_threshold']:.3f} "
        f"| {loko['auroc']:.3f} | {loko['recall_at_1pct_fpr']:.3f} | {loko['fpr_at_threshold']:.3f} |"
    ) in card
    assert "| slow_drip | not run | | | | |" in card
    assert "### (c) Unseen corpora" in card
    assert "A = gsm8k, humaneval, bbh; B = math, cruxeval, flan_cot." in card
    assert f"| A | {fold['auroc']:.3f} | {fold['recall_at_1pct_fpr']:.3f} |" in card
    assert "| B | not run | | | | |" in card


def test_card_reads_results_that_record_no_protocol(run) -> None:
    older = {"pool": {"name": "pool", "test": run.results["pool"]["test"]}}
    card = render_card_sections(older)
    assert "`--accounts 500 --seed 22` (first 150 events per account" in card
    assert "(b)" not in card and "(c)" not in card


# --------------------------------------------------------------------------- seed spread


def _result(name: str, recall: float, kinds: dict[str, float], kind: str | None = None) -> dict:
    per_kind = {
        k: {"label": 1, "n": 5, "recall_at_1pct_fpr": v, "recall_at_threshold": v / 2}
        for k, v in kinds.items()
    }
    per_kind["organic_eval_team"] = {"label": 0, "n": 9, "fpr_at_threshold": 0.1}
    test = {
        "auroc": 0.99,
        "recall_at_1pct_fpr": recall,
        "recall_at_0.1pct_fpr": None,
        "recall_at_threshold": 0.5,
        "fpr_at_threshold": 0.01,
        "per_kind": per_kind,
    }
    return {"name": name, "held_out_kind": kind, "test_sim": {"name": "testA"}, "testA": test}


def test_seed_spread_gives_each_figure_per_seed_with_mean_and_range() -> None:
    by_seed = {
        1: {
            "foldA": _result("foldA", 0.8, {"slow_drip": 0.2}),
            "loko_slow_drip": _result("loko_slow_drip", 0.9, {"slow_drip": 0.7}, "slow_drip"),
        },
        2: {"foldA": _result("foldA", 0.4, {"slow_drip": 0.6})},
    }
    table = render_seed_spread(by_seed)
    assert "| experiment | figure | seed 1 | seed 2 | mean | range |" in table
    assert "| foldA | recall at 1 % FPR | 0.800 | 0.400 | 0.600 | 0.400-0.800 |" in table
    assert "| foldA | slow_drip recall at 1 % FPR | 0.200 | 0.600 | 0.400 | 0.200-0.600 |" in table
    assert "| foldA | organic_eval_team FPR at threshold | 0.100 | 0.100 |" in table
    assert "| foldA | recall at 0.1 % FPR | – | – | – | – |" in table  # none: no mean
    # a kind left out reports that kind only; a seed that did not run it is left out
    assert (
        "| loko_slow_drip | slow_drip recall at 1 % FPR | 0.700 | – | 0.700 | 0.700-0.700 |"
        in table
    )
    assert "loko_slow_drip | AUROC" not in table
    assert "testA+testK" not in table  # no probe in these results
    # with the probe simulation, the kind's figures on both sets together follow
    probed = _result("loko_slow_drip", 0.9, {"slow_drip": 0.7}, "slow_drip")
    probed["extra_test_sims"] = [{"name": "testK", "accounts": 100}]
    probed["testA+testK"] = _result("x", 0.9, {"slow_drip": 0.6})["testA"]
    table = render_seed_spread({1: {"loko_slow_drip": probed}})
    assert "| loko_slow_drip | slow_drip recall at 1 % FPR, testA+testK | 0.600 |" in table
    table = render_seed_spread(by_seed)
    rows = [
        r.split(" | ")[0]
        for r in table.splitlines()
        if r.startswith("| loko") or r.startswith("| fold")
    ]
    assert rows.index("| loko_slow_drip") < rows.index("| foldA")  # card order


def test_seeds_share_simulations_and_write_the_spread(tmp_path: Path, hashing_embedder) -> None:
    embedder = HashingEmbedder(**hashing_embedder.to_dict(), cache=EmbeddingCache.memory())
    config = {"kind": "hashing", **embedder.to_dict()}
    (tmp_path / "seed-x").mkdir()  # not a seed directory: ignored
    by_seed = run_seeds(
        default_corpora_dir(),
        tmp_path,
        embedder,
        config,
        [3, 5],
        protocol=Protocol.tiny(),
        only=["foldA"],
        progress=False,
    )
    assert sorted(by_seed) == [3, 5]
    assert sorted(p.name for p in (tmp_path / "sims").iterdir()) == ["testA", "trainA"]
    for s in (3, 5):
        result = json.loads((tmp_path / f"seed-{s}" / "results" / "foldA.json").read_text())
        assert result["protocol"]["train_config"]["seed"] == s
        assert (tmp_path / f"seed-{s}" / "models" / "foldA" / "weights.pt").is_file()
        assert not (tmp_path / f"seed-{s}" / "sims").exists()
    assert load_seed_results(tmp_path).keys() == {3, 5}
    spread = (tmp_path / "spread.md").read_text()
    fold = [by_seed[s]["foldA"]["testA"]["recall_at_1pct_fpr"] for s in (3, 5)]
    assert f"| foldA | recall at 1 % FPR | {fold[0]:.3f} | {fold[1]:.3f} |" in spread
    # the second seed's figures differ only by training: same simulated accounts
    assert by_seed[3]["foldA"]["testA"]["n_accounts"] == by_seed[5]["foldA"]["testA"]["n_accounts"]
    with pytest.raises(ValueError, match="distinct"):
        run_seeds(default_corpora_dir(), tmp_path, embedder, config, [3, 3])


# --------------------------------------------------------------------------- command line


def test_command_line_overrides_only_the_training_seed_ensemble_and_view_weight() -> None:
    base = ["--corpora", "c", "--out", "o"]
    assert protocol_from_args(build_parser().parse_args(base)) == Protocol()
    args = build_parser().parse_args(
        [*base, "--network-seed", "2", "--ensemble", "1", "--content-view-weight", "0.25"]
    )
    p = protocol_from_args(args)
    assert (p.train_config.seed, p.train_config.ensemble) == (2, 1)
    assert p.train_config.content_view_weight == 0.25
    default = Protocol()
    assert p.sims() == default.sims()  # the same simulations, so figures are comparable
    rest = {"seed", "ensemble", "content_view_weight"}
    assert {k: v for k, v in vars(p.train_config).items() if k not in rest} == {
        k: v for k, v in vars(default.train_config).items() if k not in rest
    }
    exps = {e.name: e.config for e in p.experiments()}
    assert {c.seed for c in exps.values()} == {2}
    assert {c.ensemble for c in exps.values()} == {1}
    chained = protocol_from_args(
        build_parser().parse_args(
            [*base, "--chain-augment", "40", "--chain-kinds", "organic_eval_team"]
        )
    )
    assert chained.train_config.chain_augment == 40
    assert chained.train_config.chain_kinds == ("organic_eval_team",)
    assert protocol_from_args(build_parser().parse_args(base)).train_config.chain_kinds == ()
    dropped = protocol_from_args(build_parser().parse_args([*base, "--length-dropout", "0.8"]))
    assert dropped.train_config.length_dropout == 0.8
    assert protocol_from_args(build_parser().parse_args(base)).train_config.length_dropout == 0.0
    covered = protocol_from_args(build_parser().parse_args([*base, "--splice-cover-client"]))
    assert covered.train_config.splice_cover_client is True
    assert (
        protocol_from_args(build_parser().parse_args(base)).train_config.splice_cover_client
        is False
    )


def test_development_protocol_never_judges_on_a_held_out_simulation() -> None:
    held_out, dev = Protocol().sims(), Protocol.development().sims()
    tests = ("test", "testK", "testA", "testB")
    # the same training simulations, so a recipe chosen there is the one the card evaluates
    assert {k: v for k, v in dev.items() if k not in tests} == {
        k: v for k, v in held_out.items() if k not in tests
    }
    all_seeds = {spec.seed for spec in held_out.values()}
    assert not {dev[name].seed for name in tests} & all_seeds
    assert dev["testA"].exclude_sources == held_out["testA"].exclude_sources
    assert Protocol.development().train_config == Protocol().train_config
    base = ["--corpora", str(default_corpora_dir()), "--out", "x"]
    chosen = protocol_from_args(
        build_parser().parse_args([*base, "--development", "--ensemble", "1"])
    )
    assert chosen.sims() == dev and chosen.train_config.ensemble == 1
    # a card rendered from development results says so, and how to reproduce them
    result = {"name": "pool", "protocol": chosen.to_dict()}
    assert "Development copies" in render_card_sections({"x": result}).splitlines()[0]
    assert "--development" in render_card_sections({"x": result})
    assert render_card_sections({}).startswith("## Held-out evaluation")
    # development results written before the probe simulation existed are still told apart
    old = {k: v for k, v in chosen.to_dict().items() if not k.startswith("loko_probe")}
    assert "Development copies" in render_card_sections({"x": {"name": "pool", "protocol": old}})
    # any other test seeds are neither the card's held-out sets nor the development copies
    other = {"name": "pool", "protocol": Protocol(test_seed=77).to_dict()}
    assert render_card_sections({"x": other}).startswith("## Evaluation on other test seeds")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corpora", "no/such/corpora"], "corpora directory not found: no/such/corpora"),
        (["--corpora", str(default_corpora_dir()), "--only", "a", "d"], "unknown experiment 'd'"),
        (
            ["--corpora", str(default_corpora_dir()), "--ensemble", "0"],
            "TrainConfig.ensemble must be in [1, 16], got 0",
        ),
        (
            ["--corpora", str(default_corpora_dir()), "--content-view-weight", "1"],
            "TrainConfig.content_view_weight must be in [0, 1), got 1.0",
        ),
        (
            ["--corpora", str(default_corpora_dir()), "--network-seeds", "2", "2"],
            "seeds must be distinct, got [2, 2]",
        ),
    ],
)
def test_command_line_errors_are_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()
