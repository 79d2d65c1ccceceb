"""Feed-forward layers: dense SwiGLU, per-modality FFNs and a Mixture of Experts, one module.

`FeedForward(d_model, MoEConfig)` is the only FFN the transformer uses; the three ablations
of the reference paper (dense / modality-specific / MoE with shared experts) are configs:

- ``dense``    one SwiGLU FFN of hidden size 4*d_model, applied to every token.
- ``modality`` two such FFNs, text tokens through one and vision tokens through the other.
- ``moe``      a token-choice top-k router over ``n_experts`` fine-grained SwiGLU experts of
               hidden size ``4*d_model / granularity``, plus (``shared_experts``) one text and
               one vision shared expert of the same width, applied by the token's modality.

All three go through one dispatch: every token gets ``A`` (expert id, weight) assignments
(``A = top_k (+1 shared)`` for moe, ``A = 1`` for modality), the ``T*A`` assignments are
stably sorted by expert, token rows gathered, run through ONE grouped matmul per SwiGLU
weight (``torch._grouped_mm`` with offsets from the per-expert counts), and scatter-added
back with their weights. Where ``torch._grouped_mm`` cannot run (old torch, unaligned sizes,
an unsupported device/dtype) the "sorted" fallback pads every expert's slice of the sorted
buffer to a multiple of a block size and runs a batched matmul over blocks. Neither path
syncs with the host (no ``.item()``/``.tolist()``/``.nonzero()``), so the layer compiles with
``torch.compile(fullgraph=True)``.

Load balancing: a Switch-style auxiliary loss (``balance="aux"``), DeepSeek-V3 expert-bias
balancing (``"bias"``: a per-expert bias that shifts only the top-k *selection*, updated by
``update_load_balance_bias`` after ``optimizer.step()`` from counts accumulated in forward),
both, or none.

Shape legend (torchtitan style): B batch, T tokens (B*T flattened), D d_model, F expert hidden
size, E routed experts, N experts in the bank (routed + shared), K top-k, A assignments per
token, R sorted assignment rows (T*A), P padded rows, Q blocks, M modalities (2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("dense", "moe", "modality")
BALANCE = ("aux", "bias", "both", "none")
DISPATCH = ("grouped_mm", "sorted", "auto")
SCORE_FUNCS = ("softmax", "sigmoid")
N_MODALITIES = 2  # 0 = text, 1 = vision


@dataclass
class MoEConfig:
    kind: str = "moe"  # "dense" | "moe" | "modality" (one dense FFN per modality: text/vision)
    n_experts: int = 16  # routed experts
    top_k: int = 2  # routed experts per token
    granularity: int = 4  # G = 4*d_model/d_expert -> d_expert = 4*d_model/G (paper picks G=16)
    shared_experts: bool = True  # per-modality shared experts: 1 text + 1 vision, each d_expert wide
    balance: str = "aux"  # "aux" (Switch loss) | "bias" (DeepSeek-V3 expert bias) | "both" | "none"
    aux_loss_weight: float = 0.01  # weight of the aux loss inside moe_aux_loss()
    bias_update_rate: float = 1e-3  # step of the sign update of the expert bias
    dispatch: str = "auto"  # "grouped_mm" | "sorted" (padded blocks + bmm) | "auto" (grouped where it runs)
    score_func: str = "softmax"  # router scores: "softmax" over experts or per-expert "sigmoid"
    route_norm: bool = True  # renormalise the top-k weights to sum to 1 (use False with top_k=1)
    # dense / modality FFN hidden size is 4*d_model, so an MoE with (top_k + shared) * d_expert
    # == 4*d_model has the same active FFN FLOPs as the dense layer.

    def __post_init__(self):
        for name, value, allowed in (
            ("kind", self.kind, KINDS),
            ("balance", self.balance, BALANCE),
            ("dispatch", self.dispatch, DISPATCH),
            ("score_func", self.score_func, SCORE_FUNCS),
        ):
            if value not in allowed:
                raise ValueError(f"MoEConfig.{name}={value!r}, expected one of {allowed}")
        if self.kind == "moe":
            if self.n_experts < 1:
                raise ValueError(f"MoEConfig.n_experts={self.n_experts}, expected >= 1")
            if not 1 <= self.top_k <= self.n_experts:
                raise ValueError(f"MoEConfig.top_k={self.top_k}, expected 1 <= top_k <= n_experts={self.n_experts}")
            if self.granularity < 1:
                raise ValueError(f"MoEConfig.granularity={self.granularity}, expected >= 1")

    @property
    def uses_aux(self) -> bool:
        return self.kind == "moe" and self.balance in ("aux", "both")

    @property
    def uses_bias(self) -> bool:
        return self.kind == "moe" and self.balance in ("bias", "both")


def expert_hidden(d_model: int, cfg: MoEConfig) -> int:
    """Hidden size F of one expert: 4*d_model for dense/modality, 4*d_model/G for moe."""
    if cfg.kind != "moe":
        return 4 * d_model
    if (4 * d_model) % cfg.granularity:
        raise ValueError(f"granularity={cfg.granularity} must divide 4*d_model={4 * d_model}")
    return 4 * d_model // cfg.granularity


@dataclass
class MoEStats:
    """What one forward routed, for logging (all detached except aux_loss)."""

    aux_loss: Tensor  # scalar, already multiplied by aux_loss_weight (0 when unused); has grad
    tokens_per_expert: Tensor  # (E,) float: assignments per routed expert, sums to T*K (dense: (1,), modality: (2,))
    router_entropy: Tensor  # scalar: mean per-token entropy of the router distribution (0 if no router)
    tokens_per_expert_by_modality: Tensor  # (2, E) float: the same counts split by token modality
    load_balance: Tensor  # scalar: unweighted Switch balance E*sum(f*P), 1 = uniform (0 if no router)


# ----------------------------------------------------------------------------- dispatch


@torch.compiler.assume_constant_result
def _grouped_mm_runs(device_type: str, dtype: torch.dtype, compiled: bool) -> bool:
    """Whether torch._grouped_mm works forward+backward on this device type and dtype.

    `compiled`: also under torch.compile, whose fake-tensor tracing runs the op's meta
    kernel; that kernel can be stricter than the eager one (torch 2.14 accepts float32 on
    CPU in eager but its meta kernel wants bf16/fp16). Probed once per key with a tiny
    aligned problem and cached; treated as a constant by dynamo so the choice adds no guard
    or graph break.
    """
    ok = _probe_grouped_mm(device_type, dtype)
    return ok and (not compiled or _probe_grouped_mm("meta", dtype))


@functools.cache
def _probe_grouped_mm(device_type: str, dtype: torch.dtype) -> bool:
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        with torch.enable_grad():  # the first call may come from inference code under no_grad
            return _try_grouped_mm(device_type, dtype)
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _try_grouped_mm(device_type: str, dtype: torch.dtype) -> bool:
    """One tiny aligned grouped matmul, forward and backward, checked against per-group matmuls."""
    x = torch.randn(24, 16, device=device_type, dtype=dtype, requires_grad=True)
    w = torch.randn(3, 32, 16, device=device_type, dtype=dtype, requires_grad=True)
    offs = torch.tensor([5, 5, 24], device=device_type, dtype=torch.int32)
    y = torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)
    y.backward(torch.ones_like(y))
    if device_type == "meta":  # shapes and dtypes only: the meta kernel accepted the call
        return y.shape == (24, 32) and w.grad is not None and w.grad.shape == w.shape
    ref = torch.cat([x[:5] @ w[0].T, x[5:] @ w[2].T])
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    return bool(torch.allclose(y, ref, atol=tol, rtol=tol)) and w.grad is not None


def grouped_mm_supported(device: torch.device, dtype: torch.dtype, *dims: int, compiled: bool | None = None) -> bool:
    """torch._grouped_mm runs here (eager, or under torch.compile when `compiled`; None = whether
    we are being compiled now) and every inner dim is 16-byte aligned (its stride rule)."""
    if compiled is None:
        compiled = torch.compiler.is_compiling()
    elem = torch.empty((), dtype=dtype).element_size()
    aligned = all((d * elem) % 16 == 0 for d in dims)
    return aligned and _grouped_mm_runs(device.type, dtype, compiled)


def _sort_assignments(idx_TA: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Stable sort of the T*A assignments by expert id.

    Returns order_R (positions into the flattened (T*A) assignments), expert_R (sorted expert
    ids) and counts_N (int64 assignments per expert; a static-size scatter-add, not bincount,
    whose output length would depend on the data).
    """
    flat_R = idx_TA.reshape(-1)
    order_R = torch.argsort(flat_R, stable=True)
    counts_N = torch.zeros(n, dtype=torch.int64, device=flat_R.device)
    counts_N.scatter_add_(0, flat_R, torch.ones_like(flat_R))
    return order_R, flat_R[order_R], counts_N


def _swiglu_grouped(
    xs_RD: Tensor, w1: Tensor, w2: Tensor, w3: Tensor, counts_N: Tensor, weight_R: Tensor | None
) -> Tensor:
    """Rows sorted by expert -> weight * SwiGLU of each row's expert, one grouped matmul per weight.

    The routing weight scales the hidden activations (R, F) rather than the output (R, D):
    the same result (the down projection is linear), F/D as much memory traffic for G > 4.
    """
    offs_N = torch.cumsum(counts_N, 0).to(torch.int32)
    h_RF = F.silu(torch._grouped_mm(xs_RD, w1.transpose(-2, -1), offs=offs_N))
    h_RF = h_RF * torch._grouped_mm(xs_RD, w3.transpose(-2, -1), offs=offs_N)
    if weight_R is not None:
        h_RF = h_RF * weight_R.unsqueeze(1)
    return torch._grouped_mm(h_RF, w2.transpose(-2, -1), offs=offs_N)


def _block_size(rows: int, n: int) -> int:
    """Static block size of the sorted fallback: ~rows/(2n), a power of two in [8, 256].

    Every block gathers its own copy of its expert's weights, so blocks must be large
    (measured on CPU, d=256: b=256 beat 64/128/512/1024 at G=4 and G=16); the price is
    up to n*(b-1) padding rows, computed on zeros.
    """
    target = max(rows // (2 * n), 1)
    return min(max(1 << (target.bit_length() - 1), 8), 256)


def _swiglu_blocks(
    x_TD: Tensor,
    token_R: Tensor,
    expert_R: Tensor,
    counts_N: Tensor,
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
    weight_R: Tensor | None,
) -> Tensor:
    """Fallback of `_swiglu_grouped` without grouped_mm and without host syncs.

    Each expert's slice of the sorted rows is padded to a multiple of a block size b, so
    every block of b rows belongs to one expert; a batched matmul over the (static) number
    of blocks applies the block's expert. Padding rows read a zero row, get weight 0 and are
    discarded. Returns the (R, D) outputs in sorted order, like `_swiglu_grouped`.
    """
    R, n, D = token_R.shape[0], counts_N.shape[0], x_TD.shape[1]
    b = _block_size(R, n)
    Q = (R + n * (b - 1) + b - 1) // b  # static upper bound on the number of blocks
    padded_N = (counts_N + b - 1) // b * b
    pend_N = torch.cumsum(padded_N, 0)
    start_N = torch.cumsum(counts_N, 0) - counts_N
    # padded position of every sorted row: its expert's padded start + its rank in the expert
    dest_R = (pend_N - padded_N)[expert_R] + torch.arange(R, device=x_TD.device) - start_N[expert_R]
    src_P = torch.full((Q * b,), x_TD.shape[0], dtype=torch.int64, device=x_TD.device)
    src_P = src_P.index_put((dest_R,), token_R)  # padding rows point at the appended zero row
    xp_QbD = F.pad(x_TD, (0, 0, 0, 1)).index_select(0, src_P).view(Q, b, D)
    block_Q = torch.arange(Q, device=x_TD.device) * b
    expert_Q = torch.searchsorted(pend_N, block_Q, right=True).clamp_(max=n - 1)  # unused tail blocks: any expert
    w1_QFD, w3_QFD, w2_QDF = w1[expert_Q], w3[expert_Q], w2[expert_Q]  # one weight copy per block
    h = F.silu(torch.bmm(xp_QbD, w1_QFD.transpose(1, 2))) * torch.bmm(xp_QbD, w3_QFD.transpose(1, 2))
    if weight_R is not None:
        weight_P = torch.zeros(Q * b, dtype=weight_R.dtype, device=weight_R.device).index_put((dest_R,), weight_R)
        h = h * weight_P.view(Q, b, 1)
    y_QbD = torch.bmm(h, w2_QDF.transpose(1, 2))
    return y_QbD.view(Q * b, D).index_select(0, dest_R)


class Experts(nn.Module):
    """A bank of N SwiGLU experts (hidden F) applied by (expert id, weight) assignments."""

    def __init__(self, n: int, d_model: int, hidden: int, dispatch: str):
        super().__init__()
        self.n, self.d_model, self.hidden, self.dispatch = n, d_model, hidden, dispatch
        self.w1 = nn.Parameter(torch.empty(n, hidden, d_model))  # (N, F, D) gate projection
        self.w3 = nn.Parameter(torch.empty(n, hidden, d_model))  # (N, F, D) up projection
        self.w2 = nn.Parameter(torch.empty(n, d_model, hidden))  # (N, D, F) down projection

    def init_weights(self, std: float = 0.02, out_std: float | None = None) -> None:
        nn.init.trunc_normal_(self.w1, std=std, a=-3 * std, b=3 * std)
        nn.init.trunc_normal_(self.w3, std=std, a=-3 * std, b=3 * std)
        out_std = std if out_std is None else out_std
        nn.init.trunc_normal_(self.w2, std=out_std, a=-3 * out_std, b=3 * out_std)

    def use_grouped_mm(self, x: Tensor) -> bool:
        if self.dispatch == "sorted":
            return False
        ok = grouped_mm_supported(x.device, x.dtype, self.d_model, self.hidden)
        if self.dispatch == "grouped_mm" and not ok:
            raise ValueError(
                f"dispatch='grouped_mm' but torch._grouped_mm cannot run on device={x.device.type} "
                f"dtype={x.dtype} with d_model={self.d_model}, hidden={self.hidden}"
                f"{' under torch.compile' if torch.compiler.is_compiling() else ''} (needs a torch whose "
                "_grouped_mm takes this dtype, and 16-byte aligned sizes); expected dispatch='auto' or 'sorted'"
            )
        return ok

    def forward(self, x_TD: Tensor, idx_TA: Tensor, weight_TA: Tensor | None = None) -> Tensor:
        """out[t] = sum_a weight[t, a] * SwiGLU_{idx[t, a]}(x[t]); (T, D) -> (T, D).

        weight_TA None means weight 1 for every assignment. Under autocast the experts run in
        the autocast dtype (grouped_mm is not on autocast's cast lists, so we cast here).
        """
        T, A = idx_TA.shape
        device_type = x_TD.device.type
        if torch.is_autocast_enabled(device_type):
            x_TD = x_TD.to(torch.get_autocast_dtype(device_type))
        dtype = x_TD.dtype
        w1, w2, w3 = (w.to(dtype) for w in (self.w1, self.w2, self.w3))  # no-op unless autocast
        if self.n == 1:  # dense: every token to expert 0, no dispatch
            y_TD = F.linear(F.silu(F.linear(x_TD, w1[0])) * F.linear(x_TD, w3[0]), w2[0])
            return y_TD if weight_TA is None else y_TD * weight_TA.sum(1, keepdim=True).to(dtype)
        order_R, expert_R, counts_N = _sort_assignments(idx_TA, self.n)
        token_R = order_R // A  # source token of every sorted row
        weight_R = None if weight_TA is None else weight_TA.reshape(-1)[order_R].to(dtype)
        if self.use_grouped_mm(x_TD):
            y_RD = _swiglu_grouped(x_TD.index_select(0, token_R), w1, w2, w3, counts_N, weight_R)
        else:
            y_RD = _swiglu_blocks(x_TD, token_R, expert_R, counts_N, w1, w2, w3, weight_R)
        return torch.zeros_like(x_TD).index_add_(0, token_R, y_RD)  # scatter-add (already weighted)


# ----------------------------------------------------------------------------- the layer


class Router(nn.Module):
    """Token-choice top-k router in fp32. The expert bias (if any) shifts only the selection."""

    def __init__(self, d_model: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Parameter(torch.empty(cfg.n_experts, d_model))  # (E, D)
        # DeepSeek-V3 balancing state: bias added to the scores for top-k selection only,
        # and the assignment counts accumulated in training forwards since the last update.
        self.register_buffer("expert_bias", torch.zeros(cfg.n_experts), persistent=cfg.uses_bias)
        self.register_buffer("tokens_seen", torch.zeros(cfg.n_experts), persistent=False)

    def init_weights(self, std: float = 0.02) -> None:
        nn.init.trunc_normal_(self.gate, std=std, a=-3 * std, b=3 * std)

    def forward(self, x_TD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> top-k expert ids (T, K) int64, their weights (T, K) fp32, probs (T, E) fp32."""
        cfg = self.cfg
        with torch.autocast(device_type=x_TD.device.type, enabled=False):
            logits_TE = F.linear(x_TD.float(), self.gate.float())
        if cfg.score_func == "softmax":
            scores_TE = logits_TE.softmax(dim=-1)
            probs_TE = scores_TE
        else:
            scores_TE = logits_TE.sigmoid()
            probs_TE = scores_TE / scores_TE.sum(-1, keepdim=True)
        if cfg.uses_bias:
            _, idx_TK = torch.topk(scores_TE.detach() + self.expert_bias, cfg.top_k, dim=-1)
            w_TK = scores_TE.gather(1, idx_TK)
        else:
            w_TK, idx_TK = torch.topk(scores_TE, cfg.top_k, dim=-1)
        if cfg.route_norm:
            w_TK = w_TK / w_TK.sum(-1, keepdim=True)
        return idx_TK, w_TK, probs_TE


class FeedForward(nn.Module):
    """Dense / modality / MoE SwiGLU feed-forward: (B, T, D) x (B, T) modality -> (B, T, D)."""

    def __init__(self, d_model: int, cfg: MoEConfig):
        super().__init__()
        self.d_model, self.cfg = d_model, cfg
        hidden = expert_hidden(d_model, cfg)
        if cfg.kind == "dense":
            n = 1
        elif cfg.kind == "modality":
            n = N_MODALITIES
        else:
            n = cfg.n_experts + (N_MODALITIES if cfg.shared_experts else 0)
            self.router = Router(d_model, cfg)
        # moe bank layout: routed experts 0..E-1, then shared text expert E, shared vision expert E+1
        self.experts = Experts(n, d_model, hidden, cfg.dispatch)
        self._stats: MoEStats | None = None
        self._stats_of: tuple | None = None   # what a forward in eval mode routed, for `last_stats`
        self.init_weights()

    @property
    def last_stats(self) -> MoEStats | None:
        """What the last forward routed. Training forwards compute it at once (the aux loss joins
        the loss, the bias balancing counts); eval forwards (rollouts, planning) keep their routing
        and compute it here, on first use, so inference does not pay for statistics nobody reads."""
        if self._stats_of is not None:
            fn, args = self._stats_of
            self._stats, self._stats_of = fn(*args), None
        return self._stats

    def _set_stats(self, fn, *args) -> None:
        if self.training:
            self._stats, self._stats_of = fn(*args), None
        else:
            self._stats, self._stats_of = None, (fn, args)

    def init_weights(self, std: float = 0.02, out_std: float | None = None) -> None:
        """Truncated-normal init (call again after building on the meta device + to_empty)."""
        self.experts.init_weights(std, out_std)
        if self.cfg.kind == "moe":
            self.router.init_weights(std)
            self.router.expert_bias.zero_()
            self.router.tokens_seen.zero_()

    def forward(self, x: Tensor, modality: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (B, T, {self.d_model})")
        if modality is None:
            if cfg.kind != "dense":
                raise ValueError(f"kind={cfg.kind!r} needs modality (B, T) ids 0=text 1=vision, got None")
            modality = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        if modality.shape != x.shape[:2] or modality.dtype not in (torch.int64, torch.int32, torch.bool):
            raise ValueError(
                f"modality has shape {tuple(modality.shape)} dtype {modality.dtype}, "
                f"expected {tuple(x.shape[:2])} integer ids (0=text, 1=vision)"
            )
        B, T, D = x.shape
        x_TD = x.reshape(B * T, D)
        mod_T = modality.reshape(B * T).long()
        if cfg.kind == "dense":
            idx_TA = torch.zeros_like(mod_T).unsqueeze(1)
            y_TD = self.experts(x_TD, idx_TA)
            self._set_stats(self._plain_stats, idx_TA, mod_T, 1)
        elif cfg.kind == "modality":
            idx_TA = mod_T.unsqueeze(1)
            y_TD = self.experts(x_TD, idx_TA)
            self._set_stats(self._plain_stats, idx_TA, mod_T, N_MODALITIES)
        else:
            idx_TK, w_TK, probs_TE = self.router(x_TD)
            idx_TA, w_TA = idx_TK, w_TK
            if cfg.shared_experts:  # shared expert of the token's modality, weight 1, same grouped matmul
                idx_TA = torch.cat([idx_TK, (cfg.n_experts + mod_T).unsqueeze(1)], dim=1)
                w_TA = torch.cat([w_TK, torch.ones_like(w_TK[:, :1])], dim=1)
            y_TD = self.experts(x_TD, idx_TA, w_TA)
            self._set_stats(self._router_stats, idx_TK, probs_TE, mod_T)
        return y_TD.view(B, T, D)

    def _plain_stats(self, idx_TA: Tensor, mod_T: Tensor, n: int) -> MoEStats:
        with torch.no_grad():
            by_mod = _count_by_modality(idx_TA, mod_T, n)
            zero = torch.zeros((), device=idx_TA.device)
        return MoEStats(zero, by_mod.sum(0), zero, by_mod, zero)

    def _router_stats(self, idx_TK: Tensor, probs_TE: Tensor, mod_T: Tensor) -> MoEStats:
        cfg, E = self.cfg, self.cfg.n_experts
        with torch.no_grad():
            by_mod_ME = _count_by_modality(idx_TK, mod_T, E)
            counts_E = by_mod_ME.sum(0)
            if cfg.uses_bias and self.training:
                self.router.tokens_seen.add_(counts_E)
            entropy = -(probs_TE * probs_TE.clamp_min(1e-20).log()).sum(-1).mean()
        # Switch Transformer loss: E * sum_e f_e * P_e; f (assignment fractions) carries no
        # gradient, P (mean router probability) does. Minimum 1 at uniform routing, E if collapsed.
        frac_E = counts_E / counts_E.sum()
        balance = E * (frac_E * probs_TE.mean(0)).sum()
        aux = balance * cfg.aux_loss_weight if cfg.uses_aux else torch.zeros((), device=probs_TE.device)
        return MoEStats(aux, counts_E, entropy, by_mod_ME, balance.detach())


def _count_by_modality(idx_TA: Tensor, mod_T: Tensor, n: int) -> Tensor:
    """(T, A) expert ids -> (2, n) float assignment counts per (token modality, expert)."""
    key = (mod_T.unsqueeze(1) * n + idx_TA).reshape(-1)
    counts = torch.zeros(N_MODALITIES * n, device=idx_TA.device)
    counts.scatter_add_(0, key, torch.ones_like(key, dtype=counts.dtype))
    return counts.view(N_MODALITIES, n)


# ----------------------------------------------------------------------------- model-level helpers


def _ffns(model: nn.Module):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, FeedForward)]


def moe_aux_loss(model: nn.Module) -> Tensor:
    """Sum of the (weighted) aux losses of every FeedForward's last forward; 0 if none.

    Call after the forward whose loss it joins (each forward overwrites `last_stats`).
    """
    losses = [m.last_stats.aux_loss for _, m in _ffns(model) if m.last_stats is not None]
    if not losses:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return torch.stack(losses).sum()


@torch.no_grad()
def update_load_balance_bias(model: nn.Module) -> None:
    """DeepSeek-V3 bias balancing: bias += rate * sign(mean load - load), then reset the counts.

    Call after optimizer.step(). Uses the counts accumulated by the training forwards since
    the last call (summed over ranks when torch.distributed is initialised); a no-op for
    layers whose balance has no bias and when nothing was counted.
    """
    for _, m in _ffns(model):
        if not m.cfg.uses_bias:
            continue
        router = m.router
        counts_E = router.tokens_seen
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts_E)
        delta_E = torch.sign(counts_E.mean() - counts_E) * m.cfg.bias_update_rate
        delta_E = torch.where(counts_E.sum() > 0, delta_E - delta_E.mean(), torch.zeros_like(delta_E))
        router.expert_bias.add_(delta_E)
        counts_E.zero_()


def moe_stats(model: nn.Module) -> dict[str, float]:
    """Routing statistics of the last forward of every FeedForward (host sync: for logging only).

    Per layer `<name>/...`: entropy, max_load and min_load (max/min tokens per expert over the
    mean, 1 = balanced), balance (Switch balance, 1 = uniform), aux (weighted aux loss);
    model-wide `moe/...`: the means of entropy and balance, the worst max_load / min_load,
    the summed aux loss, and dropped (always 0: dispatch is dropless).
    """
    out: dict[str, float] = {}
    routed = []
    for name, m in _ffns(model):
        s = m.last_stats
        if s is None or m.cfg.kind != "moe":
            continue
        load = s.tokens_per_expert / s.tokens_per_expert.mean().clamp_min(1e-9)
        row = {
            "entropy": s.router_entropy.item(),
            "max_load": load.max().item(),
            "min_load": load.min().item(),
            "balance": s.load_balance.item(),
            "aux": s.aux_loss.item(),
        }
        out.update({f"{name or 'ffn'}/{k}": v for k, v in row.items()})
        routed.append(row)
    if routed:
        out["moe/entropy"] = sum(r["entropy"] for r in routed) / len(routed)
        out["moe/balance"] = sum(r["balance"] for r in routed) / len(routed)
        out["moe/max_load"] = max(r["max_load"] for r in routed)
        out["moe/min_load"] = min(r["min_load"] for r in routed)
        out["moe/aux"] = sum(r["aux"] for r in routed)
        out["moe/dropped"] = 0.0
    return out


def ffn_param_counts(d_model: int, cfg: MoEConfig) -> tuple[int, int]:
    """(total, active per token) parameters of one FeedForward with this config."""
    hidden = expert_hidden(d_model, cfg)
    per_expert = 3 * d_model * hidden
    if cfg.kind == "dense":
        return per_expert, per_expert
    if cfg.kind == "modality":
        return N_MODALITIES * per_expert, per_expert
    shared = N_MODALITIES if cfg.shared_experts else 0
    router = cfg.n_experts * d_model
    total = (cfg.n_experts + shared) * per_expert + router
    active = (cfg.top_k + (1 if cfg.shared_experts else 0)) * per_expert + router
    return total, active


def ffn_flops_per_token(d_model: int, cfg: MoEConfig) -> int:
    """Forward matmul FLOPs per token of one FeedForward (2 per multiply-add; router included)."""
    return 2 * ffn_param_counts(d_model, cfg)[1]


def active_params(model: nn.Module) -> int:
    """Parameters touched per token: all parameters minus the experts a token does not visit."""
    total = sum(p.numel() for p in model.parameters())
    for _, m in _ffns(model):
        ffn_total, ffn_active = ffn_param_counts(m.d_model, m.cfg)
        total -= ffn_total - ffn_active
    return total


def total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
