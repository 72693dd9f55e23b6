"""Fleet linking, clustering and judging on synthetic worlds (hermetic, a few seconds).

Embeddings are synthetic: a prompt is a unit vector mixing a "wrapper" direction and a
"content" direction, so the geometry of harvesting (same wrapper, different content) and
of a viral question (same content, different words) is controlled exactly.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score

import model.fleet as _fl
from model.fleet import (
    FLEET_FEATURES,
    Fleet,
    FleetJudge,
    FleetLinker,
    LinkConfig,
    build_fleets,
    combine_account_score,
    describe_fleets,
    fleet_features,
    fleet_labels,
    link_accounts,
    template_signature,
)
from model.fleet_index import IncidentIndex, PromptIndex, unit_rows

DIM = 64


@dataclass
class World:
    """Per-prompt and per-account arrays of a simulated population, plus the truth."""

    account: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    key: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    ip: list[str | None] = field(default_factory=list)
    ua: list[str | None] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    reasoning: list[float] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    group: list[int] = field(default_factory=list)  # truth cluster, -1 = alone
    kind: list[str] = field(default_factory=list)
    campaign: list[str | None] = field(default_factory=list)
    next_group: int = 0

    def new_account(self, ip, ua, own, reasoning, label, group, kind, campaign=None) -> int:
        self.ip.append(ip)
        self.ua.append(ua)
        self.own.append(own)
        self.reasoning.append(reasoning)
        self.label.append(label)
        self.group.append(group)
        self.kind.append(kind)
        self.campaign.append(campaign)
        return len(self.ip) - 1

    def prompt(self, account: int, vector: np.ndarray, key: int, ts: float) -> None:
        self.account.append(account)
        self.vectors.append(vector / np.linalg.norm(vector))
        self.key.append(key)
        self.ts.append(ts)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.array(self.account),
            np.array(self.vectors, dtype=np.float32),
            np.array(self.key, dtype=np.int64),
            np.array(self.ts),
        )


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return v / np.linalg.norm(v)


def _key(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 2**62))


def add_organic(w: World, rng: np.random.Generator, n: int) -> None:
    for _ in range(n):
        a = w.new_account(
            f"198.{rng.integers(256)}.{rng.integers(256)}.0/24",
            f"client/{rng.integers(8)}",
            float(rng.uniform(0.02, 0.45)),
            float(rng.uniform(0.0, 0.3)),
            0,
            -1,
            "organic",
        )
        t = rng.uniform(0, 30 * 86400)
        for _ in range(rng.integers(5, 40)):
            t += rng.exponential(600) if rng.random() < 0.8 else rng.exponential(86400)
            w.prompt(a, _unit(rng), _key(rng), t)


def add_hydra(
    w: World,
    rng: np.random.Generator,
    n_accounts: int,
    *,
    paraphrased: bool,
    campaign: str | None = None,
    wrappers: list[tuple[np.ndarray, int]] | None = None,
) -> int:
    """A harvesting fleet: shared wrappers, different problems, shared infrastructure."""
    group = w.next_group
    w.next_group += 1
    wrappers = wrappers or [(_unit(rng), _key(rng)) for _ in range(rng.integers(1, 4))]
    prefixes = [f"203.0.{rng.integers(256)}.0/24" for _ in range(rng.integers(2, 4))]
    agents = [f"python-httpx/{rng.integers(20)}" for _ in range(rng.integers(1, 3))]
    start = rng.uniform(0, 20 * 86400)
    for _ in range(n_accounts):
        a = w.new_account(
            str(rng.choice(prefixes)),
            str(rng.choice(agents)),
            float(rng.uniform(0.25, 0.65)),
            float(rng.uniform(0.5, 0.95)),
            1,
            group,
            "hydra",
            campaign,
        )
        t = start + rng.uniform(0, 86400)
        for _ in range(rng.integers(5, 31)):
            wrapper, key = wrappers[rng.integers(len(wrappers))]  # operators rotate wrappers
            t += rng.uniform(30, 300)  # jittered schedule
            if paraphrased:  # reworded wrapper: own key, close embedding
                w.prompt(a, wrapper + 0.3 * _unit(rng), _key(rng), t)
            else:  # exact wrapper, long slot: same key, looser embedding
                w.prompt(a, wrapper + 0.8 * _unit(rng), key, t)
    return group


def one_subnet(w: World, group: int) -> None:
    """Put every account of a campaign behind its first account's IP prefix."""
    members = [i for i, g in enumerate(w.group) if g == group]
    for i in members:
        w.ip[i] = w.ip[members[0]]


def add_viral(w: World, rng: np.random.Generator, n_users: int) -> int:
    """Organic users who each also ask one trending question, in their own words."""
    group = w.next_group
    w.next_group += 1
    question = _unit(rng)
    for _ in range(n_users):
        a = w.new_account(
            f"100.{rng.integers(256)}.{rng.integers(256)}.0/24",
            f"browser/{rng.integers(5)}",
            float(rng.uniform(0.02, 0.45)),
            float(rng.uniform(0.0, 0.3)),
            0,
            group,
            "viral",
        )
        t = rng.uniform(0, 30 * 86400)
        for _ in range(rng.integers(4, 15)):
            t += rng.exponential(3600)
            w.prompt(a, _unit(rng), _key(rng), t)
        for _ in range(rng.integers(1, 3)):
            w.prompt(a, question + 0.2 * _unit(rng), _key(rng), t + rng.uniform(0, 3600))
    return group


def add_batch_pipeline(w: World, rng: np.random.Generator, n_accounts: int = 3) -> int:
    """One company's nightly summarisation job spread over a few accounts."""
    group = w.next_group
    w.next_group += 1
    wrapper, key = _unit(rng), _key(rng)
    prefix = f"192.0.{rng.integers(256)}.0/24"
    t0 = rng.uniform(0, 20 * 86400)
    for i in range(n_accounts):
        a = w.new_account(
            prefix,
            "acme-batch/1.0",
            float(rng.uniform(0.05, 0.3)),
            float(rng.uniform(0.0, 0.05)),
            0,
            group,
            "batch",
        )
        for j in range(30):
            w.prompt(a, wrapper + 0.8 * _unit(rng), key, t0 + 60.0 * (3 * j + i))
    return group


def hydra_world(seed: int) -> World:
    rng = np.random.default_rng(seed)
    w = World()
    add_organic(w, rng, 400)
    for size, paraphrased in ((20, False), (45, True), (80, False), (150, True), (300, False)):
        add_hydra(w, rng, size, paraphrased=paraphrased)
    return w


def mixed_world(seed: int, *, viral_users: tuple[int, ...], hydra_sizes: tuple[int, ...]) -> World:
    rng = np.random.default_rng(seed)
    w = World()
    add_organic(w, rng, 150)
    for i, size in enumerate(hydra_sizes):
        add_hydra(w, rng, size, paraphrased=bool(i % 2))
    for n in viral_users:
        add_viral(w, rng, n)
    for _ in range(3):
        add_batch_pipeline(w, rng)
    return w


def link(w: World, config: LinkConfig | None = None):
    account, vectors, key, ts = w.arrays()
    return link_accounts(account, vectors, key, ts, w.ip, w.ua, config=config), vectors


def predicted_groups(clusters: list[np.ndarray], n_accounts: int) -> np.ndarray:
    pred = np.arange(n_accounts) + 10**6  # alone
    for f, members in enumerate(clusters):
        pred[members] = f
    return pred


def truth_groups(w: World) -> np.ndarray:
    group = np.array(w.group)
    return np.where(group >= 0, group, np.arange(len(group)) + 10**6)


# ------------------------------------------------------------------ template signature


def test_template_signature_collides_for_same_wrapper_with_different_slots():
    wrapper = (
        "You are an expert mathematician. Solve the following problem step by step and "
        "show every intermediate result.\nProblem: {}\nPut the final answer in a box at the end."
    )
    a = template_signature(wrapper.format("If 3x + 5 = 20, what is x?"))
    b = template_signature(wrapper.format("A train covers 120 km in 1.5 hours; find its speed."))
    assert a == b != 0
    assert template_signature('Translate "good morning" into French and explain why.') == (
        template_signature(
            'Translate "the cat sleeps on the warm mat" into French and explain why.'
        )
    )
    code = "Review this code and list every bug you find:\n```python\n{}\n```\nBe concise."
    assert template_signature(code.format("x = 1")) == template_signature(
        code.format("def f(a):\n    return a / 0")
    )


def test_template_signature_separates_unrelated_texts_and_ignores_bare_questions():
    a = template_signature("What is the capital of France and why did it become the capital?")
    b = template_signature("Write a short poem about the sea in the style of John Keats please.")
    assert a != b
    assert template_signature("hi") == 0
    assert template_signature("```\nprint(1)\n```") == 0


def _reference_signature(text: str) -> int:
    """The signature computed the plain way: the whole text masked, then every line read."""
    t = unicodedata.normalize("NFKC", text).lower()
    for pattern in (_fl._CODE_FENCE, _fl._INLINE_CODE, _fl._URL, _fl._EMAIL, _fl._QUOTED):
        t = pattern.sub(" § ", t)
    for pattern in (_fl._NUMBER, _fl._LONG_TOKEN):
        t = pattern.sub(" § ", t)
    tokens: list[str] = []
    for line in t.splitlines():
        match = _fl._LABEL.match(line)
        if match and len(match.group(1).split()) <= 8:
            line = f"{match.group(1)} §"
        words = _fl._TOKEN.findall(line)
        tokens.extend(["§"] if len(words) > 40 else words)
    c = [w for i, w in enumerate(tokens) if w != "§" or i == 0 or tokens[i - 1] != "§"]
    if sum(w != "§" for w in c) < 3:
        return 0
    if len(c) > 16:
        c = [*c[:8], "…", *c[-8:]]
    digest = hashlib.blake2b(" ".join(c).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def test_template_signature_of_long_texts_read_from_the_ends_equals_reading_them_whole():
    rng = np.random.default_rng(5)
    pieces = [
        "Summarise the document below in five bullet points.",
        "Document:",
        "Question: what does section 3.2 claim?",
        'He said "wait\rfor it" and left at 10:45.',
        "mail me at a.b@example.org or see https://example.org/x?y=1",
        "x" * 30,
        "",
        "  ",
        "\r",
        "Answer in French.",
        "\u2028",
        "It's the 'best' one, isn't it?",
        "word " * 45,
        "Ｆｕｌｌｗｉｄｔｈ text and ﬁ ligatures",
        "Title: a § marked line",
        "`inline code` and more words here",
    ]
    checked = 0
    for _ in range(400):
        n = int(rng.integers(1, 60))
        parts = [pieces[int(k)] for k in rng.integers(0, len(pieces), n)]
        seps = ["\n", "\n\n", "\r\n", " ", "\n"]
        text = "".join(p + seps[int(rng.integers(0, len(seps)))] for p in parts)
        assert template_signature(text) == _reference_signature(text), repr(text[:200])
        checked += len(text) > _fl._LAZY_CHARS
    assert checked > 100  # the read-from-the-ends path was taken


# ------------------------------------------------------------------ prompt index


def clustered_vectors(rng: np.random.Generator, n_groups: int, per_group: int) -> np.ndarray:
    centres = rng.standard_normal((n_groups, DIM))
    x = np.repeat(centres, per_group, axis=0) + 0.25 * rng.standard_normal(
        (n_groups * per_group, DIM)
    )
    return unit_rows(x)


def test_exact_and_approximate_index_agree_on_top_neighbours():
    rng = np.random.default_rng(0)
    x = clustered_vectors(rng, 1500, 8)  # 12,000 vectors, 8 near duplicates each
    rows = rng.choice(len(x), 1000, replace=False)
    exact = PromptIndex(DIM, kind="flat")
    exact.add(x)
    _, truth = exact.search(x[rows], 5)
    ivf = PromptIndex(DIM, kind="ivf", reduce_to=None, seed=1)
    ivf.add(x)
    assert exact.is_exact and not ivf.is_exact
    _, found = ivf.search(x[rows], 5)
    recall = np.mean([len(set(t) & set(f)) / 5 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.95
    # with the PCA projection, near-tie order may change but pairs above a threshold agree
    projected = PromptIndex(DIM, kind="ivf", reduce_to=48, seed=1)
    projected.add(x)
    want = set(zip(*exact.neighbour_pairs(x[rows], rows, 8, 0.85)[:2], strict=True))
    got = set(zip(*projected.neighbour_pairs(x[rows], rows, 8, 0.85)[:2], strict=True))
    assert len(want & got) >= 0.95 * len(want) and len(got - want) <= 0.05 * len(got)


def test_auto_index_turns_approximate_and_incremental_add_finds_new_neighbours():
    rng = np.random.default_rng(1)
    x = clustered_vectors(rng, 800, 10)
    index = PromptIndex(DIM, exact_max=5000)
    index.add(x[:4000])
    assert index.is_exact
    index.add(x[4000:])  # crosses exact_max: trains IVF, moves the first 4,000 over
    assert not index.is_exact and index.ntotal == len(x)
    fresh = unit_rows(x[:50] + 0.05 * rng.standard_normal((50, DIM)))
    new_ids = np.arange(10**6, 10**6 + 50)
    index.add(fresh, new_ids)
    queries = unit_rows(fresh + 0.01 * rng.standard_normal((50, DIM)))
    _, ids = index.search(queries, 3)
    assert np.mean(ids[:, 0] == new_ids) >= 0.95
    q, nb, sims = index.neighbour_pairs(fresh, new_ids, k=5, threshold=0.9)
    assert np.all(sims >= 0.9) and np.all(q != nb)
    originals = set(zip(q.tolist(), nb.tolist(), strict=True))
    assert sum((10**6 + i, i) in originals for i in range(50)) >= 45  # finds its original


# ------------------------------------------------------------------ linking


def test_hydra_fleets_are_recovered():
    w = hydra_world(seed=7)
    result, _ = link(w)
    truth = truth_groups(w)
    pred = predicted_groups(result.clusters, len(w.group))
    assert adjusted_rand_score(truth, pred) >= 0.9
    for members in result.clusters:  # no fleet mixes campaigns, or a campaign with organic
        if (truth[members] < 10**6).any():  # (two organic users on one /24 may pair up)
            assert len(set(truth[members])) == 1
    for g in range(5):  # a campaign may split along its infrastructure, never scatter
        idx = np.flatnonzero(truth == g)
        assert np.bincount(pred[idx] - pred[idx].min()).max() >= len(idx) / 2
    legacy, _ = link(w, LinkConfig(content_alone=True))  # near-duplicates link on their own
    assert sorted(len(c) for c in legacy.clusters)[-5:] == [20, 45, 80, 150, 300]


def test_content_alone_does_not_join_campaigns_that_harvest_the_same_problems():
    rng = np.random.default_rng(21)
    w = World()
    add_organic(w, rng, 100)
    problems = [_unit(rng) for _ in range(40)]  # one public benchmark, harvested by both
    for c in range(2):
        group = w.next_group
        w.next_group += 1
        prefix, agent = f"203.1.{c}.0/24", f"harvester/{c}"
        for _ in range(15):
            a = w.new_account(prefix, agent, 0.6, 0.8, 1, group, "hydra", f"c-{c}")
            for j in rng.choice(40, 8, replace=False):
                w.prompt(a, problems[j] + 0.3 * _unit(rng), _key(rng), float(j))
    for _ in range(3):  # an eval team running the benchmark once, from elsewhere
        a = w.new_account(
            f"198.51.{rng.integers(256)}.0/24", "eval-harness/2", 0.3, 0.5, 0, -1, "eval"
        )
        for j in range(40):
            w.prompt(a, problems[j] + 0.3 * _unit(rng), _key(rng), float(j))
    truth = truth_groups(w)
    result, _ = link(w)
    assert adjusted_rand_score(truth, predicted_groups(result.clusters, len(w.group))) >= 0.95
    legacy, _ = link(w, LinkConfig(content_alone=True))
    merged = predicted_groups(legacy.clusters, len(w.group))
    assert len(set(merged[truth < 2])) == 1  # content alone: both campaigns and the eval team
    assert merged[-1] == merged[100]  # the eval team (last) with the first campaign


def test_hydra_fleets_are_recovered_from_text_with_the_hashing_embedder():
    embedder_module = pytest.importorskip("model.embedder")
    rng = np.random.default_rng(8)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(3000)]

    def phrase(n: int) -> str:
        return " ".join(rng.choice(words, n))

    wrappers = [
        "You are a careful mathematician. Solve the problem below step by step and "
        "justify every step.\nProblem: {}\nGive the final answer in a box.",
        "Think through the following question slowly, listing each intermediate result.\n"
        "Question: {}\nEnd with 'Final answer:' and nothing else.",
        'Explain your full reasoning before answering "{}" and rate your confidence 1-10.',
    ]
    texts, account, group = [], [], []
    for a in range(150):  # organic users: unrelated free text
        group.append(-1)
        for _ in range(rng.integers(5, 20)):
            texts.append(phrase(int(rng.integers(6, 30))))
            account.append(a)
    for f, size in enumerate((20, 40)):  # two fleets, each rotating its own wrappers
        mine = wrappers[:2] if f == 0 else wrappers[2:]
        for _ in range(size):
            a = len(group)
            group.append(f)
            for _ in range(rng.integers(5, 31)):
                slot = f"{phrase(int(rng.integers(8, 25)))} {rng.integers(1000)}"
                texts.append(mine[rng.integers(len(mine))].format(slot))
                account.append(a)
    vectors = embedder_module.HashingEmbedder(dim=128).encode(texts)
    keys = np.array([template_signature(t) for t in texts], dtype=np.int64)
    result = link_accounts(np.array(account), vectors, keys, np.arange(len(texts), dtype=float))
    truth = np.array(group)
    truth = np.where(truth >= 0, truth, np.arange(len(truth)) + 10**6)
    pred = predicted_groups(result.clusters, len(group))
    assert adjusted_rand_score(truth, pred) >= 0.9
    assert sorted(len(c) for c in result.clusters) == [20, 40]


def test_two_campaigns_bridged_by_one_account_are_split():
    rng = np.random.default_rng(3)
    w = World()
    add_organic(w, rng, 100)
    first = (_unit(rng), _key(rng))
    second = (_unit(rng), _key(rng))
    add_hydra(w, rng, 60, paraphrased=False, wrappers=[first])
    add_hydra(w, rng, 60, paraphrased=False, wrappers=[second])
    bridge = w.new_account(None, None, 0.3, 0.2, 0, -1, "organic")
    for i, (wrapper, key) in enumerate([first, second] * 3):
        w.prompt(bridge, wrapper + 0.8 * _unit(rng), key, float(i))
    result, _ = link(w, LinkConfig(split_min_accounts=50))
    big = [c for c in result.clusters if len(c) >= 50]
    assert len(big) == 2
    group = np.array(w.group)
    for members in big:
        assert len(set(group[members]) - {-1}) == 1


def test_shared_ip_links_only_accounts_that_mostly_send_linked_prompts():
    rng = np.random.default_rng(4)
    w = World()
    for _ in range(30):
        a = w.new_account("10.0.0.0/24", "same-agent", 0.1, 0.1, 0, -1, "organic")
        for t in range(10):
            w.prompt(a, _unit(rng), _key(rng), float(t))
    account, vectors, key, ts = w.arrays()
    # an office behind one NAT: 10 of each account's 40 prompts looked like harvesting
    office = link_accounts(account, vectors, key, ts, w.ip, w.ua, n_sent=[40] * 30)
    assert office.clusters == []
    assert link(w, LinkConfig(content_alone=True))[0].clusters == []  # nor the IP boost alone
    assert link(w, LinkConfig(infra_weight=0))[0].clusters == []
    # every prompt they sent was linked (harvest-like): one operator's infrastructure
    (fleet,) = link(w)[0].clusters
    assert len(fleet) == 30


def test_accounts_rotating_through_prefixes_link_through_every_prefix_they_used():
    rng = np.random.default_rng(6)
    w = World()
    prefixes = [f"203.2.{i}.0/24" for i in range(4)]
    for i in range(12):  # account i mainly on prefix i % 4, sometimes on the next one
        a = w.new_account(prefixes[i % 4], f"agent/{i}", 0.6, 0.8, 1, 0, "hydra")
        for t in range(8):
            w.prompt(a, _unit(rng), _key(rng), float(t))
    account, vectors, key, ts = w.arrays()
    main_only = link_accounts(account, vectors, key, ts, w.ip, w.ua)
    assert sorted(len(c) for c in main_only.clusters) == [3, 3, 3, 3]
    sets = [
        {prefixes[i % 4], prefixes[(i + 1) % 4]} if i < 4 else {prefixes[i % 4]} for i in range(12)
    ]
    rotating = link_accounts(account, vectors, key, ts, w.ip, w.ua, ip_prefix_sets=sets)
    assert [len(c) for c in rotating.clusters] == [12]


def test_incremental_add_links_a_new_account_into_its_fleet():
    rng = np.random.default_rng(5)
    w = World()
    add_organic(w, rng, 80)
    wrapper = (_unit(rng), _key(rng))
    one_subnet(w, add_hydra(w, rng, 25, paraphrased=True, wrappers=[wrapper]))
    account, vectors, key, ts = w.arrays()
    linker = FleetLinker(DIM, LinkConfig(exact_max=1000))  # approximate index from 1,000
    linker.add(account, vectors, key, ts)
    linker.set_account_info(w.ip, w.ua)
    before = linker.link()
    assert not linker.index.is_exact
    newcomer = len(w.group)
    new_vectors = unit_rows(np.stack([wrapper[0] + 0.3 * _unit(rng) for _ in range(6)]))
    found = linker.add(np.full(6, newcomer), new_vectors, rng.integers(1, 2**62, 6), np.arange(6.0))
    assert found > 0
    fleet_member = len(w.group) - 1  # the newcomer comes in through the fleet's client
    linker.set_account_info([*w.ip, w.ip[fleet_member]], [*w.ua, w.ua[fleet_member]])
    after = linker.link()
    fleet = next(c for c in after.clusters if newcomer in c)
    assert len(fleet) == len(next(c for c in before.clusters if len(c) == 25)) + 1


# ------------------------------------------------------------------ judging


def fitted_judge() -> FleetJudge:
    w = mixed_world(11, viral_users=(30, 120), hydra_sizes=(20, 40, 90, 25, 150, 60))
    w2 = mixed_world(12, viral_users=(60, 15), hydra_sizes=(30, 100, 22, 70))
    x, y = [], []
    for world in (w, w2):
        result, vectors = link(world)
        evidence = describe_fleets(result, vectors, np.array(world.own), np.array(world.reasoning))
        x.append(fleet_features(evidence))
        y.append(fleet_labels(evidence, np.array(world.label)))
    return FleetJudge().fit(np.vstack(x), np.concatenate(y))


@pytest.fixture(scope="module")
def judge() -> FleetJudge:
    return fitted_judge()


def test_viral_question_and_batch_pipeline_are_not_harvesting_fleets(judge):
    # a viral crowd bigger than any harvesting fleet: size alone must not convict it
    w = mixed_world(13, viral_users=(250,), hydra_sizes=(25, 80))
    result, vectors = link(w)
    evidence = describe_fleets(result, vectors, np.array(w.own), np.array(w.reasoning))
    scores = judge.predict_proba(fleet_features(evidence))[:, 1]
    kinds = np.array(w.kind)
    seen = set()
    for e, score in zip(evidence, scores, strict=True):
        kind = max(set(kinds[e.accounts]), key=list(kinds[e.accounts]).count)
        seen.add(kind)
        if kind == "hydra":
            assert score >= 0.5, (kind, len(e.accounts), score)
        elif kind in ("viral", "batch"):
            assert score < 0.5, (kind, len(e.accounts), score)
    # fleets are linked and then judged; the viral crowd shares one phrase, which links
    # nobody (LinkConfig.common_min_accounts), so it is not even a fleet
    assert {"hydra", "batch"} <= seen
    viral = set(np.flatnonzero(kinds == "viral").tolist())
    linked = {int(a) for e in evidence for a in e.accounts}
    assert len(viral & linked) <= 0.05 * len(viral)


def test_a_phrase_many_accounts_share_links_nobody():
    rng = np.random.default_rng(8)
    w = World()
    phrase = _unit(rng)
    for _ in range(40):  # each sends "works now, thanks" once among its own prompts
        a = w.new_account(None, "Mozilla/5.0", 0.1, 0.1, 0, -1, "organic")  # one browser
        w.prompt(a, phrase + 0.01 * _unit(rng), _key(rng), 0.0)
        for t in range(1, 6):
            w.prompt(a, _unit(rng), _key(rng), float(t))
    assert link(w)[0].clusters == []
    crowd, _ = link(w, LinkConfig(common_min_accounts=0, content_alone=True))
    assert len(crowd.clusters) >= 1  # without the rule the crowd would be one "fleet"


def test_fleet_records_carry_checkable_reasons(judge):
    rng = np.random.default_rng(14)
    wrappers = [(_unit(rng), _key(rng)) for _ in range(2)]
    w = mixed_world(14, viral_users=(), hydra_sizes=())
    one_subnet(w, add_hydra(w, rng, 40, paraphrased=True, wrappers=wrappers, campaign="c-12"))
    # the campaign was labelled at training time: other prompts through the same wrappers
    known = unit_rows(np.stack([wrappers[i % 2][0] + 0.3 * _unit(rng) for i in range(200)]))
    incidents = IncidentIndex().fit(known, ["c-12"] * 200)
    account, vectors, key, ts = w.arrays()
    result = link_accounts(account, vectors, key, ts, w.ip, w.ua)
    evidence = describe_fleets(
        result, vectors, np.array(w.own), np.array(w.reasoning), incidents=incidents
    )
    scores = judge.predict_proba(fleet_features(evidence))[:, 1]
    fleets = build_fleets(evidence, scores, [f"a-{i}" for i in range(len(w.group))])
    assert [f.fleet_id for f in fleets] == [f"f-{i}" for i in range(1, len(fleets) + 1)]
    assert [f.score for f in fleets] == sorted((f.score for f in fleets), reverse=True)
    top = fleets[0]
    assert len(top.accounts) == 40 and top.score >= 0.5
    assert top.reasons[0].startswith("prompts 0.9") and "known campaign c-12" in top.reasons[0]
    assert any("accounts send near-duplicate prompts" in r for r in top.reasons)
    assert any("accounts share IP prefix 203.0." in r for r in top.reasons)
    record = json.loads(json.dumps(top.to_dict()))
    assert set(record) == {"fleet_id", "accounts", "score", "reasons"}
    assert record["accounts"] == sorted(record["accounts"])


def test_fleet_judge_unfitted_raises_clear_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        FleetJudge().predict_proba(np.zeros((1, len(FLEET_FEATURES))))


def test_fleet_judge_round_trips_through_json(judge):
    x = np.random.default_rng(0).random((7, len(FLEET_FEATURES)))
    again = FleetJudge.from_dict(json.loads(json.dumps(judge.to_dict())))
    np.testing.assert_allclose(again.predict_proba(x), judge.predict_proba(x))


def test_incident_index_round_trips_through_float16_arrays():
    rng = np.random.default_rng(2)
    x = clustered_vectors(rng, 3, 40)
    campaigns = ["c-1"] * 40 + ["c-2"] * 40 + ["c-3"] * 40
    index = IncidentIndex(max_per_campaign=30).fit(x, campaigns)
    vectors, meta = index.to_arrays()
    assert vectors.dtype == np.float16 and len(vectors) == 90
    again = IncidentIndex.from_arrays(vectors, json.loads(json.dumps(meta)))
    campaign, similarity = again.nearest_campaign(x[45:60])
    assert campaign == "c-2" and similarity > 0.9


def test_combine_account_score_lifts_small_accounts_in_bad_fleets_only():
    lifted = combine_account_score(0.2, 0.95, 5)
    assert lifted == pytest.approx(0.8)
    assert combine_account_score(0.2, 0.95, 200) < 0.3
    assert combine_account_score(0.9, 0.1, 5) == pytest.approx(0.9)  # never lowered
    both = combine_account_score(np.array([0.2, 0.2]), np.array([0.95, np.nan]), np.array([5, 5]))
    np.testing.assert_allclose(both, [0.8, 0.2])


def test_fleet_to_dict_matches_contract_line():
    fleet = Fleet("f-4", ["a-17", "a-90"], 0.987654, ["41 accounts share 3 prompt wrappers"])
    assert fleet.to_dict() == {
        "fleet_id": "f-4",
        "accounts": ["a-17", "a-90"],
        "score": 0.9877,
        "reasons": ["41 accounts share 3 prompt wrappers"],
    }


def test_fleet_models_saved_before_operator_evidence_keep_linking_by_content():
    from model.fleet_model import _saved_link_config

    old = {k: v for k, v in LinkConfig().__dict__.items() if k not in ("content_alone",)}
    assert _saved_link_config(old).content_alone is True
    assert _saved_link_config({**old, "content_alone": False}).content_alone is False
