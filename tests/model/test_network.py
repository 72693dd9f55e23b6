"""The sequence network (one, an ensemble, either judged with and without content) is
causal and its carried state reproduces a full pass."""

import pytest
import torch

from model.network import (
    ContentViews,
    EnsembleDetector,
    Network,
    NetworkConfig,
    SequenceDetector,
    base_network,
    build_network,
    content_view_weight,
    with_content_views,
)

_CFG = NetworkConfig(embed_dim=16, n_features=5, proj_dim=8, hidden=12, evidence_dim=4, dropout=0.0)


@pytest.fixture
def net() -> SequenceDetector:
    torch.manual_seed(0)
    return SequenceDetector(_CFG).eval()


@pytest.fixture(
    params=[(1, 0.0), (3, 0.0), (1, 0.4), (3, 0.5)],
    ids=["single", "ensemble", "single-views", "ensemble-views"],
)
def any_net(request: pytest.FixtureRequest) -> Network:
    members, weight = request.param
    torch.manual_seed(0)
    return with_content_views(build_network(_CFG, members).eval(), weight)


def test_future_events_do_not_change_past_logits(any_net: Network) -> None:
    net = any_net
    emb, feats = torch.randn(1, 20, 16), torch.randn(1, 20, 5)
    base, _ = net(emb, feats)
    emb2, feats2 = emb.clone(), feats.clone()
    emb2[:, 12:] = torch.randn(1, 8, 16)
    feats2[:, 12:] = torch.randn(1, 8, 5)
    changed, _ = net(emb2, feats2)
    assert torch.allclose(base[:, :12], changed[:, :12], atol=1e-6)
    assert not torch.allclose(base[:, 12:], changed[:, 12:])


def test_carried_state_equals_one_pass(any_net: Network) -> None:
    net = any_net
    emb, feats = torch.randn(1, 30, 16), torch.randn(1, 30, 5)
    full, _ = net(emb, feats)
    state = None
    parts = []
    for a, b in ((0, 1), (1, 7), (7, 30)):
        lg, state = net(emb[:, a:b], feats[:, a:b], state)
        parts.append(lg)
    assert torch.allclose(full, torch.cat(parts, dim=1), atol=1e-5)


def test_padding_does_not_leak_into_valid_positions_or_state(any_net: Network) -> None:
    net = any_net
    emb, feats = torch.randn(2, 10, 16), torch.randn(2, 10, 5)
    lengths = torch.tensor([10, 6])
    batched, state = net(emb, feats, lengths=lengths)
    alone, alone_state = net(emb[1:, :6], feats[1:, :6])
    assert torch.allclose(batched[1, :6], alone[0], atol=1e-5)
    assert torch.allclose(state.hidden[:, 1], alone_state.hidden[:, 0], atol=1e-5)
    assert torch.allclose(state.n_seen[1], torch.tensor(6.0))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="hidden"):
        NetworkConfig(hidden=0)
    with pytest.raises(ValueError, match="dropout"):
        NetworkConfig(dropout=1.5)


def test_prompt_head_is_causal_per_prompt_and_counted_in_the_state(net: SequenceDetector) -> None:
    emb, feats = torch.randn(1, 12, 16), torch.randn(1, 12, 5)
    _, prompt_logits, state = net.forward_all(emb, feats)
    assert prompt_logits is not None and prompt_logits.shape == (1, 12)
    # a prompt's own probability depends on that prompt alone, and the state sums them
    alone = net.forward_all(emb[:, 5:6], feats[:, 5:6])[1]
    assert alone is not None and torch.allclose(prompt_logits[:, 5], alone[:, 0], atol=1e-5)
    assert torch.allclose(state.ev_sum[0, -1], torch.sigmoid(prompt_logits).sum(), atol=1e-4)


def test_models_saved_before_the_prompt_head_load_without_it() -> None:
    old = NetworkConfig.from_dict({"embed_dim": 16, "n_features": 5, "count_pool": True})
    assert not old.prompt_head
    net = SequenceDetector(old)
    assert net.forward_all(torch.randn(1, 3, 16), torch.randn(1, 3, 5))[1] is None
    assert net.initial_state(1).ev_sum.shape == (1, old.evidence_dim)


def test_ensemble_averages_its_members_logits_and_counts() -> None:
    torch.manual_seed(1)
    members = [SequenceDetector(_CFG).eval() for _ in range(3)]
    ens = EnsembleDetector.of(members)
    emb, feats = torch.randn(2, 9, 16), torch.randn(2, 9, 5)
    logits, prompt_logits, state = ens.forward_all(emb, feats)
    outs = [m.forward_all(emb, feats) for m in members]
    assert torch.allclose(logits, torch.stack([o[0] for o in outs]).mean(0), atol=1e-6)
    assert prompt_logits is not None
    mean_p = torch.stack([torch.sigmoid(o[1]) for o in outs]).mean(0)
    assert torch.allclose(torch.sigmoid(prompt_logits), mean_p, atol=1e-6)
    # the state is the members' states side by side; the count is the members' mean count
    assert state.hidden.shape == (1, 2, 3 * _CFG.hidden)
    assert torch.allclose(state.hidden[..., _CFG.hidden : 2 * _CFG.hidden], outs[1][2].hidden)
    counts = torch.stack([m.prompt_counts(o[2]) for m, o in zip(members, outs, strict=True)]).mean(
        0
    )
    assert torch.allclose(ens.prompt_counts(state), counts, atol=1e-5)
    assert not torch.allclose(outs[0][0], outs[1][0])  # the members differ


def test_ensemble_refuses_states_and_members_that_do_not_fit() -> None:
    single, ens = SequenceDetector(_CFG), EnsembleDetector(_CFG, 2)
    with pytest.raises(ValueError, match="2-member ensemble"):
        ens.check_state(single.initial_state(1))
    with pytest.raises(ValueError, match="another network"):
        single.check_state(ens.initial_state(1))
    single.check_state(single.initial_state(1))
    ens.check_state(ens.initial_state(1))
    other = SequenceDetector(NetworkConfig(embed_dim=16, n_features=5, hidden=8))
    with pytest.raises(ValueError, match="share one NetworkConfig"):
        EnsembleDetector.of([single, other])
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleDetector(_CFG, 1)
    with pytest.raises(ValueError, match="at least 1"):
        build_network(_CFG, 0)


@pytest.mark.parametrize("members", [1, 2])
def test_content_views_mix_the_logits_with_and_without_embeddings(members: int) -> None:
    torch.manual_seed(2)
    inner = build_network(_CFG, members).eval()
    views = with_content_views(inner, 0.25)
    assert isinstance(views, ContentViews) and content_view_weight(views) == 0.25
    assert base_network(views) is inner and views.n_members == members
    emb, feats = torch.randn(2, 7, 16), torch.randn(2, 7, 5)
    logits, prompt_logits, state = views.forward_all(emb, feats)
    with_c = inner.forward_all(emb, feats)
    without = inner.forward_all(torch.zeros_like(emb), feats)
    assert torch.allclose(logits, 0.75 * with_c[0] + 0.25 * without[0], atol=1e-5)
    assert prompt_logits is not None and with_c[1] is not None and without[1] is not None
    p = 0.75 * torch.sigmoid(with_c[1]) + 0.25 * torch.sigmoid(without[1])
    assert torch.allclose(torch.sigmoid(prompt_logits), p, atol=1e-5)
    # the state is the two views' states side by side; the count is their weighted count
    h = _CFG.hidden * members
    assert state.hidden.shape == (1, 2, 2 * h)
    assert torch.allclose(state.hidden[..., :h], with_c[2].hidden, atol=1e-6)
    assert torch.allclose(state.hidden[..., h:], without[2].hidden, atol=1e-6)
    counts = 0.75 * inner.prompt_counts(with_c[2]) + 0.25 * inner.prompt_counts(without[2])
    assert torch.allclose(views.prompt_counts(state), counts, atol=1e-5)
    assert not torch.allclose(with_c[0], without[0])  # the views differ


def test_content_views_refuse_bad_weights_and_other_states() -> None:
    inner = SequenceDetector(_CFG)
    assert with_content_views(inner, 0.0) is inner
    views = with_content_views(inner, 0.5)
    assert with_content_views(views, 0.0) is inner  # undone, not nested
    assert content_view_weight(with_content_views(views, 0.3)) == 0.3
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="content view weight"):
            with_content_views(inner, bad)
    with pytest.raises(ValueError, match="with and without content"):
        views.check_state(inner.initial_state(1))
    with pytest.raises(ValueError, match="another network"):
        inner.check_state(views.initial_state(1))
    views.check_state(views.initial_state(3))
