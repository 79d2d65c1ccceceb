"""MoE / dense / modality FeedForward: dispatch against a per-token reference, routing, balancing."""

import pytest
import torch
import torch.nn.functional as F

from worldmodel.moe import (
    Experts,
    FeedForward,
    MoEConfig,
    active_params,
    ffn_flops_per_token,
    ffn_param_counts,
    grouped_mm_supported,
    moe_aux_loss,
    moe_stats,
    total_params,
    update_load_balance_bias,
)

D = 16  # d_model of the tiny test layers


def _grouped_ok(d=D, hidden=32, dtype=torch.float32, compiled=False):
    return grouped_mm_supported(torch.device("cpu"), dtype, d, hidden, compiled=compiled)


DISPATCHES = [
    "sorted",
    pytest.param(
        "grouped_mm", marks=pytest.mark.skipif(not _grouped_ok(), reason="torch._grouped_mm unavailable on CPU")
    ),
]
# Under torch.compile the op's meta kernel decides (torch 2.14 rejects float32 there while eager
# accepts it); "auto" must then fall back to the sorted path instead of crashing the compile.
COMPILED_DISPATCHES = [
    "sorted",
    "auto",
    pytest.param(
        "grouped_mm",
        marks=pytest.mark.skipif(not _grouped_ok(compiled=True), reason="torch._grouped_mm not traceable for fp32"),
    ),
]


def _expert(bank, e, v):
    """SwiGLU expert e of the bank on one token vector v (D,)."""
    return F.linear(F.silu(F.linear(v, bank.w1[e])) * F.linear(v, bank.w3[e]), bank.w2[e])


def naive_reference(m: FeedForward, x, modality):
    """Loop over tokens (test only): route each token by hand and sum its experts' outputs."""
    cfg, bank = m.cfg, m.experts
    xs, ms = x.reshape(-1, x.shape[-1]), modality.reshape(-1)
    outs = []
    for t in range(xs.shape[0]):
        v, mod = xs[t], int(ms[t])
        if cfg.kind == "dense":
            y = _expert(bank, 0, v)
        elif cfg.kind == "modality":
            y = _expert(bank, mod, v)
        else:
            logits = F.linear(v.float(), m.router.gate.float())
            s = logits.softmax(-1) if cfg.score_func == "softmax" else logits.sigmoid()
            sel = torch.topk(s.detach() + m.router.expert_bias, cfg.top_k).indices
            w = s[sel] / s[sel].sum() if cfg.route_norm else s[sel]
            y = sum(w[k] * _expert(bank, int(sel[k]), v) for k in range(cfg.top_k))
            if cfg.shared_experts:
                y = y + _expert(bank, cfg.n_experts + mod, v)
        outs.append(y)
    return torch.stack(outs).view_as(x)


def _inputs(B=2, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    modality = torch.randint(0, 2, (B, T), generator=g)
    return x, modality


CONFIGS = {
    "dense": MoEConfig(kind="dense"),
    "modality": MoEConfig(kind="modality"),
    "moe": MoEConfig(kind="moe", n_experts=8, top_k=2, granularity=2, shared_experts=False),
    "moe_shared": MoEConfig(kind="moe", n_experts=8, top_k=2, granularity=2, shared_experts=True),
    "moe_sigmoid_bias": MoEConfig(
        kind="moe", n_experts=8, top_k=3, granularity=2, score_func="sigmoid", balance="both"
    ),
    "moe_top1_raw": MoEConfig(kind="moe", n_experts=4, top_k=1, granularity=4, route_norm=False),
}


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_dispatch_matches_per_token_reference(name, dispatch):
    torch.manual_seed(0)
    cfg = MoEConfig(**{**CONFIGS[name].__dict__, "dispatch": dispatch})
    m = FeedForward(D, cfg)
    if cfg.uses_bias:  # a non-zero bias must change the selection the same way in both
        m.router.expert_bias.copy_(torch.linspace(-0.05, 0.05, cfg.n_experts))
    x, modality = _inputs()
    x.requires_grad_(True)
    names, params = zip(*m.named_parameters())

    y = m(x, modality)
    y_ref = naive_reference(m, x, modality)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)

    g_out = torch.randn_like(y)
    grads = dict(zip(("x", *names), torch.autograd.grad(y, [x, *params], g_out)))
    grads_ref = dict(zip(("x", *names), torch.autograd.grad(y_ref, [x, *params], g_out)))
    for key in grads:
        torch.testing.assert_close(grads[key], grads_ref[key], atol=1e-5, rtol=1e-4, msg=lambda s: f"grad of {key}: {s}")
    if cfg.kind == "moe":  # the router learns from the main loss through the top-k weights
        assert grads["router.gate"].abs().sum() > 0


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("pattern", ["collapsed", "some_empty", "random"])
def test_expert_bank_uneven_loads(pattern, dispatch):
    """Empty experts, one expert taking every row, and random loads (exercises block padding)."""
    torch.manual_seed(1)
    n, T, A = 6, 40, 3
    bank = Experts(n, D, 32, dispatch)
    bank.init_weights()
    x = torch.randn(T, D)
    if pattern == "collapsed":
        idx = torch.full((T, A), 4)
    elif pattern == "some_empty":
        idx = torch.randint(0, 2, (T, A)) * 5  # only experts 0 and 5
    else:
        idx = torch.randint(0, n, (T, A))
    w = torch.rand(T, A)
    y = bank(x, idx, w)
    ref = torch.stack([sum(w[t, a] * _expert(bank, int(idx[t, a]), x[t]) for a in range(A)) for t in range(T)])
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)


def test_topk_weights_sum_as_designed():
    torch.manual_seed(0)
    x = torch.randn(50, D)
    norm = FeedForward(D, MoEConfig(n_experts=8, top_k=3, granularity=2)).router
    idx, w, probs = norm(x)
    torch.testing.assert_close(w.sum(-1), torch.ones(50))  # renormalised top-k
    assert idx.shape == (50, 3) and w.dtype == torch.float32 and len({*idx[0].tolist()}) == 3
    raw = FeedForward(D, MoEConfig(n_experts=8, top_k=3, granularity=2, route_norm=False)).router
    raw.gate.data.copy_(norm.gate)
    _, w_raw, probs = raw(x)
    torch.testing.assert_close(w_raw, probs.topk(3).values)  # raw softmax scores of the chosen experts
    assert (w_raw.sum(-1) < 1).all()
    # the expert bias changes which experts are chosen but not their weights
    biased = FeedForward(D, MoEConfig(n_experts=8, top_k=2, granularity=2, balance="bias", route_norm=False)).router
    biased.gate.data.copy_(norm.gate)
    biased.expert_bias[5] = 100.0
    idx_b, w_b, probs_b = biased(x)
    assert (idx_b == 5).any(-1).all()
    torch.testing.assert_close(w_b, probs_b.gather(1, idx_b))


def _router_layer(top_k=1, n_experts=8, balance="aux"):
    cfg = MoEConfig(n_experts=n_experts, top_k=top_k, granularity=2, balance=balance, aux_loss_weight=0.5)
    return FeedForward(D, cfg)


def test_aux_loss_minimal_for_uniform_and_larger_for_collapsed():
    torch.manual_seed(0)
    x, modality = _inputs(T=32)
    m = _router_layer()
    with torch.no_grad():
        m.router.gate.zero_()  # uniform router probabilities
    m(x, modality)
    uniform = m.last_stats.aux_loss
    torch.testing.assert_close(uniform, torch.tensor(0.5))  # weight * 1 = the minimum of E*sum(f*P)
    with torch.no_grad():
        m.router.gate.normal_(std=0.3)
    m(x, modality)
    spread = m.last_stats.aux_loss
    u = F.normalize(torch.randn(D), dim=0)
    with torch.no_grad():  # tokens along u, and only expert 0 looks at u: collapsed routing
        m.router.gate.zero_()
        m.router.gate[0] = 20.0 * u
    m(x + 4.0 * u, modality)
    collapsed = m.last_stats.aux_loss
    assert uniform <= spread < collapsed
    assert collapsed > 0.5 * 0.9 * 8  # near E for a one-hot router
    assert m.last_stats.tokens_per_expert[0] == x.shape[0] * x.shape[1]
    # moe_aux_loss sums the layers and carries the gradient to the router
    model = torch.nn.ModuleList([m, _router_layer()])
    model[1](x, modality)
    total = moe_aux_loss(model)
    torch.testing.assert_close(total, m.last_stats.aux_loss + model[1].last_stats.aux_loss)
    total.backward()
    assert model[1].router.gate.grad.abs().sum() > 0
    # no aux loss for bias-only balancing or dense layers
    for cfg in (MoEConfig(balance="bias", granularity=2), MoEConfig(kind="dense")):
        other = FeedForward(D, cfg)
        other(x, modality)
        assert moe_aux_loss(other).item() == 0.0


def test_bias_update_moves_load_toward_uniform():
    torch.manual_seed(0)
    m = _router_layer(top_k=2, balance="bias").train()
    m.cfg.bias_update_rate = 0.01
    with torch.no_grad():
        m.router.gate.normal_(std=0.5)
        m.router.gate[0] += 0.3  # a favourite expert
    x = torch.randn(4, 64, D) + 0.5
    modality = torch.zeros(4, 64, dtype=torch.long)
    imbalance = []  # max / mean tokens per expert of each step
    for _ in range(80):
        m(x, modality)
        load = m.last_stats.tokens_per_expert
        imbalance.append((load.max() / load.mean()).item())
        update_load_balance_bias(m)  # uses the counts this training forward accumulated
    late = sum(imbalance[-20:]) / 20
    assert imbalance[0] > 2.5 and late < 0.6 * imbalance[0], (imbalance[0], late)
    assert m.router.expert_bias[0] < 0 and abs(m.router.expert_bias.sum()) < 1e-4  # favourite pushed down
    update_load_balance_bias(m)
    assert m.router.tokens_seen.sum() == 0  # counts reset after each update
    # eval forwards do not accumulate; aux-only layers are a no-op
    m.eval()
    m(x, modality)
    assert m.router.tokens_seen.sum() == 0
    aux_only = _router_layer(top_k=2, balance="aux").train()
    aux_only(x, modality)
    update_load_balance_bias(aux_only)
    assert aux_only.router.expert_bias.abs().sum() == 0


@pytest.mark.parametrize("name", ["dense", "modality", "moe", "moe_shared"])
def test_tokens_per_expert_counts(name):
    m = FeedForward(D, CONFIGS[name])
    x, modality = _inputs(T=20)
    m(x, modality)
    s = m.last_stats
    k = m.cfg.top_k if m.cfg.kind == "moe" else 1
    n_tok = modality.numel()
    assert s.tokens_per_expert.sum().item() == n_tok * k  # routed assignments only (not shared experts)
    by_mod = s.tokens_per_expert_by_modality
    assert by_mod.shape == (2, s.tokens_per_expert.shape[0])
    assert by_mod.sum(1).tolist() == [(modality == 0).sum().item() * k, (modality == 1).sum().item() * k]
    if name == "modality":
        assert s.tokens_per_expert.tolist() == [(modality == 0).sum().item(), (modality == 1).sum().item()]


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_shared_experts_follow_modality(dispatch):
    torch.manual_seed(0)
    cfg = MoEConfig(n_experts=8, top_k=2, granularity=2, shared_experts=True, dispatch=dispatch)
    m = FeedForward(D, cfg)
    E = cfg.n_experts
    with torch.no_grad():
        m.experts.w2[:E].zero_()  # silence the routed experts: only the shared ones remain
    x, modality = _inputs(T=16)
    y = m(x, modality).reshape(-1, D)
    xs, ms = x.reshape(-1, D), modality.reshape(-1)
    text = F.linear(F.silu(F.linear(xs, m.experts.w1[E])) * F.linear(xs, m.experts.w3[E]), m.experts.w2[E])
    vision = F.linear(F.silu(F.linear(xs, m.experts.w1[E + 1])) * F.linear(xs, m.experts.w3[E + 1]), m.experts.w2[E + 1])
    torch.testing.assert_close(y[ms == 0], text[ms == 0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(y[ms == 1], vision[ms == 1], atol=1e-6, rtol=1e-5)
    assert (text[ms == 1] - vision[ms == 1]).abs().max() > 1e-3  # the two experts differ
    with torch.no_grad():
        m.experts.w2[E + 1].zero_()  # vision shared expert off -> vision tokens give 0, text not
    y = m(x, modality).reshape(-1, D)
    assert y[ms == 1].abs().max() == 0 and y[ms == 0].abs().max() > 0


@pytest.mark.parametrize("dispatch", COMPILED_DISPATCHES)
@pytest.mark.parametrize("name", ["dense", "modality", "moe_shared", "moe_sigmoid_bias"])
def test_no_graph_breaks(name, dispatch):
    torch._dynamo.reset()
    cfg = MoEConfig(**{**CONFIGS[name].__dict__, "dispatch": dispatch})
    m = FeedForward(D, cfg).train()
    x, modality = _inputs()
    explanation = torch._dynamo.explain(m)(x, modality)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("dispatch", COMPILED_DISPATCHES)
def test_fullgraph_compile_forward_backward(dispatch):
    """fullgraph=True through AOTAutograd (aot_eager: traces forward and backward, no C++ build)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = MoEConfig(n_experts=8, top_k=2, granularity=2, balance="both", dispatch=dispatch)
    m = FeedForward(D, cfg).train()
    x, modality = _inputs()
    x.requires_grad_(True)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    y = compiled(x, modality)
    (y.square().sum() + moe_aux_loss(m)).backward()
    g_compiled = x.grad.clone()
    x.grad = None
    y_ref = m(x, modality)
    (y_ref.square().sum() + moe_aux_loss(m)).backward()
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_compiled, x.grad, atol=1e-6, rtol=1e-5)
    assert m.router.tokens_seen.sum() == 2 * x.shape[0] * x.shape[1] * cfg.top_k  # mutation survived compile


def test_autocast_bf16_runs_in_bf16_and_stays_close():
    torch.manual_seed(0)
    m = FeedForward(D, MoEConfig(n_experts=8, top_k=2, granularity=2))
    x, modality = _inputs()
    y32 = m(x, modality)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = m(x, modality)
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=2e-2, rtol=5e-2)


def test_param_counts_and_equal_active_flops():
    d = 32
    dense = FeedForward(d, MoEConfig(kind="dense"))
    # G=4 with a shared expert and top_k=3: (3 + 1) experts of width d = one dense 4d FFN
    moe_cfg = MoEConfig(n_experts=16, top_k=3, granularity=4, shared_experts=True)
    moe = FeedForward(d, moe_cfg)
    assert total_params(dense) == ffn_param_counts(d, MoEConfig(kind="dense"))[0] == 3 * d * 4 * d
    assert total_params(moe) == ffn_param_counts(d, moe_cfg)[0] == (16 + 2) * 3 * d * d + 16 * d
    assert active_params(moe) == 3 * d * 4 * d + 16 * d  # dense FFN + the router
    assert ffn_flops_per_token(d, moe_cfg) - ffn_flops_per_token(d, MoEConfig(kind="dense")) == 2 * 16 * d
    model = torch.nn.ModuleDict({"a": moe, "b": FeedForward(d, MoEConfig(kind="modality")), "emb": torch.nn.Linear(d, d)})
    assert active_params(model) == active_params(moe) + 3 * d * 4 * d + d * d + d


def test_moe_stats_summary():
    model = torch.nn.ModuleList([FeedForward(D, CONFIGS["moe_shared"]), FeedForward(D, CONFIGS["dense"])])
    x, modality = _inputs()
    for layer in model:
        layer(x, modality)
    stats = moe_stats(model)
    assert stats["moe/dropped"] == 0.0
    assert stats["0/max_load"] >= 1.0 >= stats["0/min_load"] >= 0.0
    assert 0 < stats["0/entropy"] <= torch.log(torch.tensor(8.0)).item() + 1e-6
    assert not any(k.startswith("1/") for k in stats)  # dense layers have no routing stats
    assert all(isinstance(v, float) for v in stats.values())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kind='sparse'"):
        MoEConfig(kind="sparse")
    with pytest.raises(ValueError, match="top_k=9"):
        MoEConfig(n_experts=8, top_k=9)
    with pytest.raises(ValueError, match="granularity=3"):
        FeedForward(D, MoEConfig(granularity=3))
    m = FeedForward(D, MoEConfig(n_experts=8, top_k=2, granularity=2))
    x, modality = _inputs()
    with pytest.raises(ValueError, match=r"x has shape \(2, 12, 8\), expected \(B, T, 16\)"):
        m(x[..., :8], modality)
    with pytest.raises(ValueError, match=r"modality has shape \(2, 11\)"):
        m(x, modality[:, :11])
    with pytest.raises(ValueError, match="needs modality"):
        m(x)
    unaligned = FeedForward(6, MoEConfig(n_experts=4, top_k=2, granularity=2, dispatch="grouped_mm"))
    with pytest.raises(ValueError, match="dispatch='grouped_mm'.*d_model=6"):
        unaligned(torch.randn(1, 4, 6), torch.zeros(1, 4, dtype=torch.long))
    auto = FeedForward(6, MoEConfig(n_experts=4, top_k=2, granularity=2, dispatch="auto"))
    assert auto(torch.randn(1, 4, 6), torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 6)  # falls back


def test_grouped_mm_support_is_decided_per_eager_and_compiled():
    """The compiled answer implies the eager one, and follows what the meta kernel accepts."""
    from worldmodel.moe import _probe_grouped_mm

    for dtype in (torch.float32, torch.bfloat16):
        eager, compiled = _grouped_ok(dtype=dtype), _grouped_ok(dtype=dtype, compiled=True)
        assert compiled <= eager
        assert compiled == (eager and _probe_grouped_mm("meta", dtype))
    # an explicit grouped_mm under a compile that cannot trace it is a clear error, not a crash deep in inductor
    if _grouped_ok() and not _grouped_ok(compiled=True):
        torch._dynamo.reset()
        m = FeedForward(D, MoEConfig(n_experts=8, top_k=2, granularity=2, dispatch="grouped_mm"))
        x, modality = _inputs()
        with pytest.raises(Exception, match="dispatch='grouped_mm' but torch._grouped_mm cannot run"):
            torch.compile(m, fullgraph=True, backend="aot_eager")(x, modality)


def test_grouped_mm_probe_does_not_depend_on_the_grad_mode():
    """The probe runs a backward; a first call from inference code (no_grad) must not cache 'unsupported'."""
    from worldmodel.moe import _probe_grouped_mm

    _probe_grouped_mm.cache_clear()
    with torch.no_grad():
        under_no_grad = _probe_grouped_mm("cpu", torch.float32)
    _probe_grouped_mm.cache_clear()
    assert under_no_grad == _probe_grouped_mm("cpu", torch.float32)
