"""The unified model: losses, KV-cached frame prediction vs full recompute, CFG dropout,
context noise, action encodings, gradients through rollouts, text generation, save/load."""
import pytest
import torch

from worldmodel.config import MODELS, ModelConfig
from worldmodel.flow import FlowConfig
from worldmodel.moe import MoEConfig
from worldmodel.sequence import (ACTION_VIDEO, IMAGE_TEXT, TEXT, VIDEO, Action, Document, Frame, Text, collate,
                                 document_length, mask_from_vectors, pack_rows)
from worldmodel.tokenizer import ByteTokenizer
from worldmodel.transfusion import Transfusion

N, C, A = 4, 6, 2
TOK = ByteTokenizer()
FFN = {"dense": MoEConfig(kind="dense"), "moe": MoEConfig(kind="moe", n_experts=4, top_k=2, granularity=4)}


def model(ffn="moe", enc="embed", pred="x", **kw):
    torch.manual_seed(0)
    kw.setdefault("prev_frame", "residual" if pred == "x" else "input")   # residual needs x-prediction
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, latent_dim=C, frame_grid=(2, 2), action_dim=A,
                      action_encoding=enc, action_scale=0.5, moe=FFN[ffn], flow=FlowConfig(prediction=pred), **kw)
    m = Transfusion(cfg)
    for extra in (m.prev_in, m.action_direct):   # zero at init; non-zero here so every test exercises them
        if extra is not None:
            torch.nn.init.normal_(extra.weight, std=0.3)
    for blk in m.trunk.blocks:                   # likewise the AdaLN modulation
        if blk.ada is not None:
            torch.nn.init.normal_(blk.ada.weight, std=0.05)
    return m


def rnd(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def av_doc(seed=0):
    a = rnd(2, A, seed=seed + 100) * 0.3
    return Document([Frame(rnd(N, C, seed=seed), loss=False), Action(a[0]), Frame(rnd(N, C, seed=seed + 1)),
                     Action(a[1]), Frame(rnd(N, C, seed=seed + 2))], ACTION_VIDEO)


def text_doc(s="the quick brown fox jumps over the lazy dog"):
    return Document([Text(TOK.encode(s, bos=True, eos=True))], TEXT)


def caption_doc(seed=0):
    return Document([Text(TOK.encode("arm left")), Frame(rnd(N, C, seed=seed + 7))], IMAGE_TEXT)


def batch_of(m, docs, seq_len=None, rows=2):
    seq_len = seq_len or sum(document_length(d, m.cfg) for d in docs) + 3
    return collate([pack_rows(docs, seq_len, m.cfg)] * rows)


# -- frame stacking: the previous frame's latents at noisy tokens ---------------------------------
def test_previous_frame_latents_follow_frames_and_documents():
    m = model("dense")
    docs = [av_doc(0), caption_doc(1), av_doc(2)]
    b = pack_rows(docs, sum(document_length(d, m.cfg) for d in docs) + 5, m.cfg)
    z = rnd(*b.latents.shape, seed=9) * (b.modality == 1)[..., None]   # any clean-copy inputs
    prev = m.previous_frame_latents(b, z)
    clean = (b.modality == 1) & ~b.is_noisy
    frames = z[clean].view(-1, N, C)          # clean copies in order: av0 f0 f1 f2, caption, av2 f0 f1 f2
    zero = torch.zeros(N, C)
    want = torch.stack([frames[0], frames[1], zero, frames[4], frames[5]])   # noisy: av0 f1 f2, caption, av2 f1 f2
    assert torch.equal(prev[b.is_noisy].view(-1, N, C), want)
    assert prev[~b.is_noisy].abs().sum() == 0


def test_frame_actions_follow_the_action_before_each_frame():
    m = model("dense")
    docs = [av_doc(0), caption_doc(1), av_doc(2)]
    b = pack_rows(docs, sum(document_length(d, m.cfg) for d in docs) + 5, m.cfg)
    act, ok = m.frame_actions(b)
    a0, a2 = rnd(2, A, seed=100) * 0.3, rnd(2, A, seed=102) * 0.3      # av_doc's actions
    noisy = act[b.is_noisy].view(-1, N, A)                # noisy frames: av0 f1 f2, caption, av2 f1 f2
    has = ok[b.is_noisy].view(-1, N)
    assert has.all(1).tolist() == [True, True, False, True, True] and not ok[~b.is_noisy].any()
    for got, want in zip(noisy[has.all(1)], [a0[0], a0[1], a2[0], a2[1]]):
        assert torch.allclose(got, want.expand(N, A))
    drop = b.is_noisy & (b.frame_id == 1)
    assert not m.frame_actions(b, drop)[1][drop].any()    # CFG dropout hides the direct path too


def test_direct_action_path_changes_the_prediction():
    m = model("dense").eval()
    ctx, ctx_act = rnd(2, 2, N, C, seed=1), rnd(2, 1, A, seed=2) * 0.3
    act = rnd(2, 1, A, seed=3) * 0.3
    with torch.no_grad():
        base = m.predict_next_frames(ctx, ctx_act, act, steps=1, generator=torch.Generator().manual_seed(0))
        m.action_direct.weight.zero_()
        plain = m.predict_next_frames(ctx, ctx_act, act, steps=1, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(base, plain, atol=1e-4)
    assert model("dense", enc="text").action_direct is None         # text actions have no raw values
    assert model("dense", direct_action=False).action_direct is None


# -- AdaLN-zero action conditioning ------------------------------------------------------------
def test_adaln_equals_the_plain_model_at_init():
    torch.manual_seed(0)
    cfg = dict(d_model=32, n_layers=2, n_heads=2, latent_dim=C, frame_grid=(2, 2), action_dim=A, action_scale=0.5,
               moe=FFN["moe"], prev_frame="input", direct_action=False)
    plain = Transfusion.build(ModelConfig(**cfg))
    ada = Transfusion.build(ModelConfig(**cfg, action_adaln=True))
    missing, unexpected = ada.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".ada." in k for k in missing)
    assert all(blk.ada.weight.abs().sum() == 0 for blk in ada.trunk.blocks)
    b = batch_of(plain, [av_doc(0), caption_doc(1)])
    z = b.latents + 0.5 * rnd(*b.latents.shape, seed=4)
    t = torch.rand(b.tokens.shape, generator=torch.Generator().manual_seed(1))
    ctx, ctx_act, act = rnd(2, 2, N, C, seed=1), rnd(2, 1, A, seed=2) * 0.3, rnd(2, 3, A, seed=3) * 0.3
    with torch.no_grad():
        assert torch.equal(ada(b, z=z, t=t).flow, plain(b, z=z, t=t).flow)
        roll = [m.eval().predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
                for m in (plain, ada)]
    assert torch.equal(*roll)
    with pytest.raises(ValueError, match="action_adaln=true .* action_encoding='embed'"):
        ModelConfig(action_adaln=True, action_encoding="text")


def test_adaln_makes_predictions_depend_on_actions_after_a_few_steps():
    """Zero-initialised AdaLN, a few training steps on frames that the action decides: the
    modulation has grown, carries part of the prediction, and changing the action changes it."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, latent_dim=C, frame_grid=(2, 2), action_dim=A,
                      action_scale=0.2, moe=FFN["dense"], flow=FlowConfig(prediction="x", shift=4.0, sample_steps=1),
                      prev_frame="input", direct_action=False, action_adaln=True)
    m = Transfusion.build(cfg)
    P = rnd(A, N * C, seed=42)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        a = (torch.rand(16, 2, A, generator=g) - 0.5) * 0.4
        f = torch.randn(16, 2, N, C, generator=g)
        y = f[:, 1] + (a[:, 1] @ P / 0.2).view(16, N, C)
        docs = [Document([Frame(f[i, 0], loss=False), Action(a[i, 0]), Frame(f[i, 1], loss=False), Action(a[i, 1]),
                          Frame(y[i])], ACTION_VIDEO) for i in range(16)]
        loss, _ = m.loss(collate([pack_rows([d], document_length(docs[0], cfg), cfg) for d in docs]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(blk.ada.weight.abs().sum() > 0 for blk in m.trunk.blocks)
    m.eval()
    ctx, ctx_act = rnd(4, 2, N, C, seed=1), torch.zeros(4, 1, A)
    a = (torch.rand(4, 1, A, generator=torch.Generator().manual_seed(3)) - 0.5) * 0.4
    with torch.no_grad():
        pred = m.predict_next_frames(ctx, ctx_act, a, generator=torch.Generator().manual_seed(0), shared_noise=True)
        flipped = m.predict_next_frames(ctx, ctx_act, -a, generator=torch.Generator().manual_seed(0), shared_noise=True)
        for blk in m.trunk.blocks:                       # without the modulation the action matters less
            blk.ada.weight.zero_()
        pred0 = m.predict_next_frames(ctx, ctx_act, a, generator=torch.Generator().manual_seed(0), shared_noise=True)
    assert (pred - flipped).abs().mean() > 0.05
    assert not torch.allclose(pred, pred0, atol=1e-3)    # the AdaLN path carries part of the prediction


def test_prev_frame_input_is_used_and_can_be_disabled():
    on, off = model("dense", prev_frame="input"), model("dense", prev_frame="off")
    assert off.prev_in is None and on.prev_in is not None
    b = batch_of(on, [av_doc(0)])
    z = b.latents + 0.5 * rnd(*b.latents.shape, seed=4)
    with torch.no_grad():
        used = on(b, z=z).flow[b.is_noisy]
        on.load_state_dict(off.state_dict(), strict=False)   # same weights apart from the stacking input
        used = on(b, z=z).flow[b.is_noisy]
        on.prev_in.weight.zero_()
        unused = on(b, z=z).flow[b.is_noisy]
        # zero frame-stacking weights == the model without the input
        assert torch.allclose(unused, off(b, z=z).flow[b.is_noisy], atol=1e-6)
    assert not torch.allclose(used, unused, atol=1e-3)


def test_residual_prediction_adds_the_previous_frame():
    m = model("dense", prev_frame="residual")
    with torch.no_grad():
        m.flow_head.weight.zero_()
        m.flow_head.bias.zero_()                  # head(h) = 0: the prediction is "no change"
    b = batch_of(m, [av_doc(0), caption_doc(1)])
    out = m(b).flow
    assert torch.equal(out[b.is_noisy], m.previous_frame_latents(b, b.latents)[b.is_noisy])
    clean = (b.modality == 1) & ~b.is_noisy
    frames = b.latents[clean].view(2, -1, N, C)[0]          # row 0: av f0 f1 f2, caption frame
    assert torch.equal(out[0][b.is_noisy[0]].view(-1, N, C), torch.stack([frames[0], frames[1], torch.zeros(N, C)]))
    with pytest.raises(ValueError, match="prediction='x'"):
        ModelConfig(prev_frame="residual", flow=FlowConfig(prediction="v"))
    with pytest.raises(ValueError, match="prev_frame"):
        ModelConfig(prev_frame="stacked")


# -- KV-cached rollout == full recompute --------------------------------------------------------
def reference_rollout(m, ctx, ctx_act, actions, steps, cfg_scale, generator, text=None, window=0):
    """Recompute the whole training-layout sequence (pack_rows + full forward) at every Euler step;
    window k > 0: once a document would hold more than k frames, the next one starts from the last
    min(Tc, k - 1) frames (at least 1)."""
    B, Tc = ctx.shape[:2]
    keep = max(1, min(Tc, window - 1))
    start = 0                                         # the current document's first frame
    preds = []
    for h in range(actions.shape[1]):
        if window and Tc + h - start > window:
            start = Tc + h - keep
        docs = []
        for b in range(B):
            frames = ([ctx[b, i] for i in range(Tc)] + [p[b] for p in preds])[start:]
            acts = ([ctx_act[b, i] for i in range(Tc - 1)] + [actions[b, j] for j in range(h)])[start:]
            segs = [Text(TOK.encode(text[b]), loss=False)] if text else []
            for i, f in enumerate(frames):
                segs.append(Frame(f, loss=False))
                if i < len(frames) - 1:
                    segs.append(Action(acts[i]))
            segs += [Action(actions[b, h]), Frame(torch.zeros(N, C), loss=True)]
            docs.append(Document(segs, ACTION_VIDEO))
        preds.append(sample_last_frame(m, docs, steps, cfg_scale, generator))
    return torch.stack(preds, 1)


def sample_last_frame(m, docs, steps, cfg_scale, generator):
    """Euler-sample the one noisy frame of each document with full forwards -> (B, N, C)."""
    L = max(document_length(d, m.cfg) for d in docs)
    batch = collate([pack_rows([d], L, m.cfg) for d in docs])
    noisy, B = batch.is_noisy, len(docs)

    def predictor(drop):
        def predict(z, t):
            zz, tt = batch.latents.clone(), torch.ones(noisy.shape)
            zz[noisy] = z.reshape(-1, C)
            tt[noisy] = t.expand(B).repeat_interleave(N)   # flow.sample gives one t for the batch
            return m(batch, z=zz, t=tt, drop=drop).flow[noisy].view(B, N, C)
        return predict

    noise = torch.randn(B, N, C, generator=generator)
    return m.flow.sample(predictor(None), noise, steps, cfg_scale, predictor(noisy) if cfg_scale != 1 else None)


@pytest.mark.parametrize("enc", ["embed", "text", "embed+adaln"])
@pytest.mark.parametrize("pred", ["x", "v"])
@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_kv_cache_rollout_equals_full_recompute(enc, pred, cfg_scale):
    m = model("moe", enc.split("+")[0], pred, action_adaln=enc.endswith("adaln")).eval()
    B, Tc, H = 2, 2, 3
    ctx, ctx_act, act = rnd(B, Tc, N, C, seed=1), rnd(B, Tc - 1, A, seed=2) * 0.3, rnd(B, H, A, seed=3) * 0.3
    with torch.no_grad():
        got = m.predict_next_frames(ctx, ctx_act, act, steps=3, cfg_scale=cfg_scale,
                                    generator=torch.Generator().manual_seed(5))
        ref = reference_rollout(m, ctx, ctx_act, act, 3, cfg_scale, torch.Generator().manual_seed(5))
    assert got.shape == (B, H, N, C)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()


@pytest.mark.parametrize("window", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("text", [False, True])
def test_windowed_rollout_equals_full_recompute_of_the_last_frames(window, text):
    """window k: every imagined frame is predicted from a document of at most k frames, restarted from
    the last min(Tc, k - 1) frames, exactly as a fresh rollout from them would (k >= Tc + H - 1 never
    restarts: the plain rollout)."""
    enc = "text" if text else "embed"
    m = model("moe", enc, "x", action_adaln=not text).eval()
    B, Tc, H = 2, 2, 4
    ctx, ctx_act, act = rnd(B, Tc, N, C, seed=1), rnd(B, Tc - 1, A, seed=2) * 0.3, rnd(B, H, A, seed=3) * 0.3
    cmd = ["reach left", "go up"] if text else None
    with torch.no_grad():
        got = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(5),
                                    text=cmd, window=window)
        ref = reference_rollout(m, ctx, ctx_act, act, 2, 1.0, torch.Generator().manual_seed(5), text=cmd,
                                window=window)
        whole = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(5), text=cmd)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    first_restart = max(0, window - Tc + 1)           # the step whose history first exceeds the window
    assert torch.allclose(got[:, :first_restart], whole[:, :first_restart], atol=1e-5)
    if first_restart < H:              # a restart happened: the later frames differ from the whole-history ones
        assert not torch.allclose(got[:, -1], whole[:, -1], atol=1e-4)
    else:
        assert torch.allclose(got, whole, atol=1e-5)


def test_windowed_rollout_from_a_shared_prefix_equals_one_context_per_row():
    """Candidates continuing one prefilled context (the planner's call) imagine what each would with the
    context repeated per row: the window re-reads the prefix's committed frames and actions."""
    m = model("moe", "embed", "x", action_adaln=True).eval()
    Tc, H, r = 2, 4, 3
    ctx, ctx_act, act = rnd(1, Tc, N, C, seed=1), rnd(1, Tc - 1, A, seed=2) * 0.3, rnd(r, H, A, seed=3) * 0.3
    with torch.no_grad():
        prefix = m.prefill(ctx, ctx_act)
        shared = m.predict_next_frames(prefix, None, act, steps=1, shared_noise=True, window=2,
                                       generator=torch.Generator().manual_seed(5))
        again = m.predict_next_frames(prefix, None, act, steps=1, shared_noise=True, window=2,
                                      generator=torch.Generator().manual_seed(5))
        rows = m.predict_next_frames(ctx.expand(r, -1, -1, -1), ctx_act.expand(r, -1, -1), act, steps=1,
                                     shared_noise=True, window=2, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(shared, rows, atol=1e-5), (shared - rows).abs().max()
    assert torch.equal(shared, again)                  # the prefix is not written into
    with pytest.raises(ValueError, match="window=-1"):
        m.predict_next_frames(ctx, ctx_act, act[:1], window=-1)


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_jump_equals_full_recompute_of_the_max_jump_layout(cfg_scale):
    """predict_frame_after: [context] a_0 .. a_{H-1} <boi> frame, the data.max_jump layout."""
    m = model("moe", prev_frame="input", direct_action=False).eval()
    B, Tc, H = 2, 2, 3
    ctx, ctx_act, act = rnd(B, Tc, N, C, seed=1), rnd(B, Tc - 1, A, seed=2) * 0.3, rnd(B, H, A, seed=3) * 0.3
    docs = [Document([Frame(ctx[b, 0], loss=False), Action(ctx_act[b, 0]), Frame(ctx[b, 1], loss=False),
                      *[Action(act[b, h]) for h in range(H)], Frame(torch.zeros(N, C))], ACTION_VIDEO)
            for b in range(B)]
    with torch.no_grad():
        got = m.predict_frame_after(ctx, ctx_act, act, steps=2, cfg_scale=cfg_scale,
                                    generator=torch.Generator().manual_seed(5))
        ref = sample_last_frame(m, docs, 2, cfg_scale, torch.Generator().manual_seed(5))
        other = m.predict_frame_after(ctx, ctx_act, act.flip(1), steps=2, cfg_scale=cfg_scale,
                                      generator=torch.Generator().manual_seed(5))
    assert got.shape == (B, N, C)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    assert not torch.allclose(got, other, atol=1e-4)       # every action, in order, is read
    with pytest.raises(ValueError, match="at least one action"):
        m.predict_frame_after(ctx, ctx_act, act[:, :0])
    with pytest.raises(ValueError, match="direct_action=false"):
        model("dense", direct_action=True).predict_frame_after(ctx, ctx_act, act)


def test_shared_noise_makes_rows_differ_only_by_their_inputs():
    m = model("moe", prev_frame="input", direct_action=False).eval()
    ctx, ctx_act = rnd(1, 2, N, C, seed=1).expand(3, -1, -1, -1), torch.zeros(3, 1, A)
    act = rnd(3, 2, A, seed=3) * 0.3
    act[1] = act[0]                                          # rows 0 and 1: the same inputs
    with torch.no_grad():
        for predict in (m.predict_next_frames, m.predict_frame_after):
            shared = predict(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0), shared_noise=True)
            own = predict(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
            assert torch.equal(shared[0], shared[1]) and not torch.allclose(shared[0], shared[2], atol=1e-4)
            assert not torch.allclose(own[0], own[1], atol=1e-4)   # by default every row draws its own noise


def test_training_learns_a_frame_that_the_actions_decide():
    """Through the real loss, packing and jump sampling: a target frame = the previous frame moved
    by both actions before it. The model must learn to read them (it ignores them if actions never
    reach the noisy copy, are masked, or are misaligned)."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, latent_dim=C, frame_grid=(2, 2), action_dim=A,
                      action_scale=0.2, moe=FFN["dense"], flow=FlowConfig(prediction="x", shift=4.0, sample_steps=1),
                      prev_frame="input", direct_action=False)
    m = Transfusion(cfg)
    P = rnd(2, A, N * C, seed=42) * 0.5        # how each of the two jump actions moves the frame

    def sample(g, n):
        a = (torch.rand(n, 3, A, generator=g) - 0.5) * 0.4            # a context action, then a 2-step jump
        f = torch.randn(n, 2, N, C, generator=g)
        return a, f, f[:, 1] + ((a[:, 1] @ P[0] + a[:, 2] @ P[1]) / 0.2).view(n, N, C)

    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(500):
        a, f, y = sample(g, 16)
        docs = [Document([Frame(f[i, 0], loss=False), Action(a[i, 0]), Frame(f[i, 1], loss=False), Action(a[i, 1]),
                          Action(a[i, 2]), Frame(y[i])], ACTION_VIDEO) for i in range(16)]
        loss, _ = m.loss(collate([pack_rows([d], document_length(docs[0], cfg), cfg) for d in docs]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    a, f, y = sample(torch.Generator().manual_seed(1), 64)
    with torch.no_grad():
        err = (m.predict_frame_after(f, a[:, :1], a[:, 1:], generator=torch.Generator().manual_seed(0)) - y).pow(2).mean()
        other = a[:, 1:].roll(1, 0)
        err_shuffled = (m.predict_frame_after(f, a[:, :1], other, generator=torch.Generator().manual_seed(0)) - y).pow(2).mean()
    copy_prev = (f[:, 1] - y).pow(2).mean()
    assert err < 0.5 * err_shuffled and err < 0.5 * copy_prev, (err, err_shuffled, copy_prev)


def test_text_command_prefix_rollout_equals_full_recompute():
    m = model("dense", "text").eval()
    ctx, ctx_act, act = rnd(2, 1, N, C, seed=1), torch.zeros(2, 0, A), rnd(2, 2, A, seed=3) * 0.3
    text = ["move the arm to the left", "up"]            # ragged: left-padded in the cached stream
    with torch.no_grad():
        got = m.predict_next_frames(ctx, ctx_act, act, steps=2, text=text, generator=torch.Generator().manual_seed(0))
        ref = reference_rollout(m, ctx, ctx_act, act, 2, 1.0, torch.Generator().manual_seed(0), text=text)
        plain = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, ref, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-4)     # the command is seen
    with pytest.raises(ValueError, match="action_encoding='text'"):
        model("dense", "embed").predict_next_frames(ctx, ctx_act, act, text=text)


def test_generate_frames_from_captions_equals_full_recompute():
    m = model("moe").eval()
    texts = ["the fingertip is left of the target", "up"]
    with torch.no_grad():
        got = m.generate_frames(texts, steps=3, generator=torch.Generator().manual_seed(1))
        docs = [Document([Text(TOK.encode(s, bos=True, eos=True), loss=False), Frame(torch.zeros(N, C))], IMAGE_TEXT)
                for s in texts]
        L = max(document_length(d, m.cfg) for d in docs)
        batch = collate([pack_rows([d], L, m.cfg) for d in docs])
        noisy = batch.is_noisy

        def predict(z, t):
            zz, tt = batch.latents.clone(), torch.ones(noisy.shape)
            zz[noisy], tt[noisy] = z.reshape(-1, C), t.expand(2).repeat_interleave(N)
            return m(batch, z=zz, t=tt).flow[noisy].view(2, N, C)
        ref = m.flow.sample(predict, torch.randn(2, N, C, generator=torch.Generator().manual_seed(1)), 3)
    assert got.shape == (2, N, C)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
    with torch.no_grad():                                     # the caption is seen: same noise, other text
        other = m.generate_frames(["something else entirely", "up"], steps=3, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(got[0], other[0], atol=1e-3) and torch.allclose(got[1], other[1], atol=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        m.generate_frames([""])


def test_rollout_shape_errors_name_the_shapes():
    m = model("dense").eval()
    with pytest.raises(ValueError, match=r"context_actions has shape \(2, 0, 2\), expected \(2, 1, 2\)"):
        m.predict_next_frames(rnd(2, 2, N, C), torch.zeros(2, 0, A), rnd(2, 1, A))
    with pytest.raises(ValueError, match="context has shape"):
        m.predict_next_frames(rnd(2, 2, N, C + 1), rnd(2, 1, A), rnd(2, 1, A))


# -- training losses -------------------------------------------------------------------------
def eval_loss(m, batch, seed=123):
    with torch.no_grad():
        _, met = m.loss(batch, generator=torch.Generator().manual_seed(seed))
    return met


def overfit(m, batch, steps=60, lr=3e-3):
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    m.train()
    for i in range(steps):
        loss, _ = m.loss(batch, generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("ffn", ["dense", "moe"])
@pytest.mark.parametrize("pred", ["x", "v"])
def test_losses_finite_and_fall_when_overfitting(ffn, pred):
    m = model(ffn, "embed", pred)
    batch = batch_of(m, [text_doc(), av_doc(), caption_doc()])
    before = eval_loss(m, batch)
    for k in ("loss", "loss_text", "loss_flow", "moe_aux", "loss/text", "loss/image_text", "loss/action_video"):
        assert torch.isfinite(torch.tensor(before[k])), k
    assert ("moe/entropy" in before) == (ffn == "moe")
    overfit(m, batch)
    after = eval_loss(m, batch)
    assert after["loss_text"] < 0.6 * before["loss_text"]
    assert after["loss_flow"] < 0.8 * before["loss_flow"]
    assert after["loss"] < before["loss"]


@pytest.mark.parametrize("enc", ["embed", "text"])
def test_text_alone_and_frames_alone_both_fall(enc):
    m = model("moe", enc)
    text_only = batch_of(m, [text_doc(), text_doc("hello world, hello arm")])
    frames_only = batch_of(m, [Document([Frame(rnd(N, C, seed=s)) for s in range(3)], VIDEO), av_doc(4)])
    b_text, b_frames = eval_loss(m, text_only), eval_loss(m, frames_only)
    assert b_text["loss_flow"] == 0.0 and b_text["flow_tokens"] == 0
    assert b_frames["loss_text"] == 0.0 and b_frames["text_tokens"] == 0
    overfit(m, text_only, steps=40)
    assert eval_loss(m, text_only)["loss_text"] < 0.6 * b_text["loss_text"]
    m = model("moe", enc)
    overfit(m, frames_only, steps=40)
    assert eval_loss(m, frames_only)["loss_flow"] < 0.8 * b_frames["loss_flow"]


def one_action_doc(action):
    return Document([Frame(rnd(N, C, seed=1), loss=False), Action(action), Frame(rnd(N, C, seed=2))], ACTION_VIDEO)


@pytest.mark.parametrize("enc", ["embed", "text"])
def test_condition_dropout_hides_the_action_from_the_target(enc):
    m = model("dense", enc, context_noise=0.0)
    m.train()
    b1 = batch_of(m, [one_action_doc(torch.tensor([0.4, -0.4]))])
    b2 = batch_of(m, [one_action_doc(torch.tensor([-0.4, 0.4]))])

    def flow_loss(b):
        with torch.no_grad():
            return m.loss(b, generator=torch.Generator().manual_seed(0))[1]["loss_flow"]

    m.cfg.cond_dropout = 0.0
    assert abs(flow_loss(b1) - flow_loss(b2)) > 1e-6      # the action matters...
    m.cfg.cond_dropout = 1.0
    assert abs(flow_loss(b1) - flow_loss(b2)) < 1e-6      # ...unless its condition is dropped
    m.eval()                                              # no dropout at evaluation
    assert abs(flow_loss(b1) - flow_loss(b2)) > 1e-6


def test_context_noise_in_training_and_rollout():
    m = model("dense", context_noise=0.1)
    seen = []
    m.time_emb.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    b = batch_of(m, [av_doc()])
    clean = (b.modality == 1) & ~b.is_noisy
    m.train()
    m.loss(b, generator=torch.Generator().manual_seed(0))
    t = seen[-1][clean]
    assert (t <= 1).all() and (t >= 0.9).all() and (t < 1).any()   # sigma ~ U(0, 0.1) on clean context
    m.eval()
    m.loss(b, generator=torch.Generator().manual_seed(0))
    assert (seen[-1][clean] == 1).all()                              # evaluation: clean context, t = 1

    ctx, ctx_act, act = rnd(2, 2, N, C, seed=1), rnd(2, 1, A, seed=2), rnd(2, 2, A, seed=3)
    with torch.no_grad():
        seen.clear()
        x0 = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
        ctx_t = seen[0][:, :-N]                                        # the first forward: context + noisy frame
        assert torch.equal(ctx_t, torch.ones_like(ctx_t))             # default: clean cached context, t = 1
        first = len(seen)
        x1 = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0),
                                   context_noise=0.05)
        x2 = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0),
                                   context_noise=0.05)
    assert torch.allclose(seen[first][:, :-N], torch.tensor(0.95))     # the cached context got t = 1 - sigma
    assert not torch.allclose(x0, x1, atol=1e-4) and torch.equal(x1, x2)


# -- planning-facing properties -----------------------------------------------------------------
def test_rollout_is_differentiable_in_embedded_actions():
    m = model("moe", "embed").eval()
    act = (rnd(2, 3, A, seed=3) * 0.3).requires_grad_()
    out = m.predict_next_frames(rnd(2, 1, N, C), torch.zeros(2, 0, A), act, steps=2,
                                generator=torch.Generator().manual_seed(0))
    out[:, -1].pow(2).mean().backward()
    assert act.grad is not None and torch.isfinite(act.grad).all() and act.grad.abs().sum() > 0
    # through the window's restarts too: without frame stacking, the first action reaches the last of 5
    # frames (window 2) only through the imagined frames that restarted streams re-read
    m = model("moe", "embed", prev_frame="off").eval()
    act5 = (rnd(2, 5, A, seed=4) * 0.3).requires_grad_()
    out = m.predict_next_frames(rnd(2, 1, N, C), torch.zeros(2, 0, A), act5, steps=2, window=2,
                                generator=torch.Generator().manual_seed(0))
    out[:, -1].pow(2).mean().backward()
    assert torch.isfinite(act5.grad).all() and act5.grad[:, 0].abs().sum() > 0
    with pytest.raises(ValueError, match="embed"):
        model("moe", "text").eval().predict_next_frames(rnd(2, 1, N, C), torch.zeros(2, 0, A),
                                                        act.detach().requires_grad_(), steps=2)


def test_generate_text_with_cache_equals_greedy_full_forward():
    m = model("moe").eval()
    prefix = TOK.encode("hello", bos=True)
    got = m.generate_text(prefix, max_new=6, temperature=0.0)
    ids = list(prefix)
    for _ in range(6):
        b = pack_rows([Document([Text(ids)], TEXT)], len(ids), m.cfg)
        with torch.no_grad():
            ids.append(int(m(b).logits[0, -1].argmax()))
    ref = ids[len(prefix):]
    ref = ref[:ref.index(TOK.eos_id)] if TOK.eos_id in ref else ref
    assert got == ref
    samples = m.generate_text(torch.tensor([prefix] * 3), max_new=4, temperature=1.0, top_p=0.9,
                              generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 4) and ((samples >= 0) & (samples < m.cfg.vocab_size)).all()


@pytest.mark.parametrize("enc", ["embed", "text"])
def test_save_load_equality(tmp_path, enc):
    m = model("moe", enc).eval()
    m.save_pretrained(tmp_path / "wm", extra={"task": "reacher", "context_frames": 2})
    m2 = Transfusion.from_pretrained(tmp_path / "wm", device="cpu")
    assert m2.cfg == m.cfg and m2.extra == {"task": "reacher", "context_frames": 2}
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    ctx, ctx_act, act = rnd(1, 2, N, C), rnd(1, 1, A), rnd(1, 2, A)
    with torch.no_grad():
        a = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
        b = m2.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError):
        Transfusion.from_pretrained(tmp_path / "missing")


def test_size_factories_build_configs():
    for name, factory in MODELS.items():
        cfg = factory(latent_dim=128, frame_grid=(4, 4), action_dim=2)
        assert cfg.d_model % cfg.n_heads == 0 and cfg.frame_tokens == 16, name
    tiny = Transfusion(MODELS["tiny"](latent_dim=16, frame_grid=(4, 4), action_dim=2))
    assert 1e6 < tiny.num_params() < 4e6 and tiny.num_active_params() < tiny.num_params()
    with pytest.raises(ValueError, match="action_encoding"):
        ModelConfig(action_encoding="tokens")
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"d_model": 64, "n_layer": 2})


def test_meta_build_initialises_every_parameter():
    """build(): meta device -> to_empty -> init_weights gives the same model as eager construction."""
    cfg = model("moe").cfg
    eager = Transfusion(cfg)
    torch.manual_seed(1)
    eager.init_weights()
    torch.manual_seed(1)
    built = Transfusion.build(cfg, "cpu")
    sd = built.state_dict()
    for k, v in eager.state_dict().items():
        assert torch.equal(v, sd[k]), k
    for name, buf in built.named_buffers():
        assert torch.equal(buf, dict(eager.named_buffers())[name]), name


def test_model_info_table(capsys, tmp_path):
    from lw.model_info import main

    assert main(["sizes=[tiny,1b]", f"out={tmp_path}"]) == 0
    out = capsys.readouterr().out
    rows = [r for r in out.splitlines() if r.startswith("| tiny") or r.startswith("| 1b")]
    assert len(rows) == 4                                    # two sizes x (cpu, gpu) latent shapes
    import json
    info = json.loads((tmp_path / "model_info.json").read_text())
    big = [r for r in info if r["size"] == "1b"][0]
    assert 0.9e9 < big["total"] < 1.5e9 and big["active"] < 0.3 * big["total"]
    tiny = Transfusion(MODELS["tiny"](latent_dim=128, frame_grid=(4, 4), action_dim=2))
    assert [r for r in info if r["size"] == "tiny"][0]["total"] == tiny.num_params()


def test_configs_saved_before_frame_stacking_load_without_it():
    d = ModelConfig().to_dict()
    d.pop("prev_frame")
    d.pop("direct_action")
    old = ModelConfig.from_dict(d)
    assert old.prev_frame == "off" and old.direct_action is False
    assert ModelConfig.from_dict(ModelConfig().to_dict()).prev_frame == "input"


# -- the fast inference path: shared contexts, buffered KV cache, fused commits --------------------
@pytest.mark.parametrize("enc", ["embed", "embed+adaln", "text"])
@pytest.mark.parametrize("r", [1, 3])
def test_shared_context_rollout_equals_expanded_contexts(enc, r):
    """Bc contexts continued by r rows each == every row given its own copy of its context (the
    context's KV cache is computed once and repeated); for jumps too."""
    m = model("moe", "embed" if enc != "text" else "text", action_adaln=enc == "embed+adaln").eval()
    ctx, ctx_act, act = rnd(2, 2, N, C, seed=1), rnd(2, 1, A, seed=2) * 0.3, rnd(2 * r, 3, A, seed=3) * 0.3
    kw = dict(steps=2, shared_noise=True)
    with torch.no_grad():
        shared = m.predict_next_frames(ctx, ctx_act, act, generator=torch.Generator().manual_seed(0), **kw)
        full = m.predict_next_frames(ctx.repeat_interleave(r, 0), ctx_act.repeat_interleave(r, 0), act,
                                     generator=torch.Generator().manual_seed(0), **kw)
    assert shared.shape == (2 * r, 3, N, C)
    assert torch.allclose(shared, full, atol=1e-5)
    if not m._uses_frame_action:               # jumps: models without a per-frame action input
        with torch.no_grad():
            j1 = m.predict_frame_after(ctx, ctx_act, act, generator=torch.Generator().manual_seed(0), **kw)
            j2 = m.predict_frame_after(ctx.repeat_interleave(r, 0), ctx_act.repeat_interleave(r, 0), act,
                                       generator=torch.Generator().manual_seed(0), **kw)
        assert torch.allclose(j1, j2, atol=1e-5)


def test_shared_context_needs_a_divisible_batch():
    m = model("moe").eval()
    with pytest.raises(ValueError, match="multiple of the 2 contexts"):
        m.predict_next_frames(rnd(2, 2, N, C), rnd(2, 1, A), rnd(3, 2, A))


def test_buffered_cache_equals_the_differentiable_one():
    """The no_grad rollout (preallocated KV buffers, grown as needed) == the autograd one (torch.cat)."""
    m = model("moe", action_adaln=True).eval()
    ctx, ctx_act, act = rnd(3, 2, N, C, seed=1), rnd(3, 1, A, seed=2) * 0.3, rnd(3, 9, A, seed=3) * 0.3
    with torch.no_grad():
        buffered = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
    act.requires_grad_(True)
    graph = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(buffered, graph.detach(), atol=1e-5)
    graph.sum().backward()
    assert act.grad is not None and act.grad.abs().sum() > 0


def test_shared_context_rollout_is_differentiable():
    """With autograd on, shared contexts (the context's cache repeated for its r rows) give the expanded
    contexts' frames and gradients (gradient planners)."""
    m = model("moe", action_adaln=True).eval()
    ctx, ctx_act = rnd(2, 2, N, C, seed=1), rnd(2, 1, A, seed=2) * 0.3
    grads = []
    for c, ca in ((ctx, ctx_act), (ctx.repeat_interleave(3, 0), ctx_act.repeat_interleave(3, 0))):
        act = (rnd(6, 3, A, seed=3) * 0.3).requires_grad_(True)
        out = m.predict_next_frames(c, ca, act, steps=2, generator=torch.Generator().manual_seed(0), shared_noise=True)
        out.square().sum().backward()
        grads.append((out.detach(), act.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5) and torch.allclose(grads[0][1], grads[1][1], atol=1e-4)


def test_rollout_cache_is_allocated_once(monkeypatch):
    """A rollout gives its KV cache room for its horizon up front: no regrowth (which copies the
    whole cache into a fresh buffer), and the tokens land where the autograd cache puts them."""
    from worldmodel.layers import KVCache

    cache = KVCache(1)
    cache.headroom = 40
    chunks = [torch.randn(2, 1, n, 4) for n in (3, 20, 20)]   # without the headroom: regrown at the third
    ptr = None
    with torch.no_grad():
        for c in chunks:
            k, _ = cache.extend(0, c, c)
            ptr = ptr or cache.layers[0][0].data_ptr()
            assert cache.layers[0][0].data_ptr() == ptr
            cache.advance(c.shape[2])
    assert torch.equal(k, torch.cat(chunks, 2))
    m = model("moe").eval()
    grown = []
    real = KVCache.extend

    def spy(self, i, k, v):
        before = self.layers[i][0].data_ptr() if self.layers[i] is not None else None
        out = real(self, i, k, v)
        grown.append(before is not None and self.layers[i][0].data_ptr() != before)
        return out

    monkeypatch.setattr(KVCache, "extend", spy)
    with torch.no_grad():
        m.predict_next_frames(rnd(2, 2, N, C), rnd(2, 1, A), rnd(2, 8, A), steps=2)
    assert grown and not any(grown)


def test_cpu_imagination_keeps_freed_memory():
    import platform

    from worldmodel.device import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() and keep_freed_memory()     # set, and idempotent


def test_last_block_keeps_only_the_needed_tokens():
    """keep=k: the trunk's output for the last k tokens equals the full forward's, and a commit with
    keep=0 caches the same keys/values as one that computes every output."""
    m = model("moe").eval()
    b = batch_of(m, [av_doc()])
    z, t = b.latents, torch.ones(b.tokens.shape)
    x = m._embed(b, z, m.time_emb(t))
    pos, mod, mask = (b.pos_seq, b.pos_row, b.pos_col), (b.modality == 1).long(), mask_from_vectors(b, b)
    with torch.no_grad():
        full = m.trunk(x, pos, mod, mask)
        tail = m.trunk(x, pos, mod, mask, keep=3)
        c1, c2 = m.trunk.new_cache(), m.trunk.new_cache()
        m.trunk(x, pos, mod, mask, c1, commit=True)
        m.trunk(x, pos, mod, mask, c2, commit=True, keep=0)
    assert torch.allclose(tail, full[:, -3:], atol=1e-6)
    assert c1.length == c2.length == b.seq_len
    for (k1, v1), (k2, v2) in zip(c1.layers, c2.layers):
        assert torch.equal(k1[:, :, :c1.length], k2[:, :, :c2.length]) and torch.equal(v1[:, :, :c1.length], v2[:, :, :c2.length])


def test_prefilled_context_is_reusable_and_equals_a_fresh_one():
    """prefill: the context's KV cache once, then many rollouts/jumps continuing it (a plan's CEM
    iterations) give what fresh calls give, and using it never changes it."""
    m = model("moe").eval()
    ctx, ctx_act = rnd(2, 2, N, C, seed=1), rnd(2, 1, A, seed=2) * 0.3
    prefix = m.prefill(ctx, ctx_act)
    for seed in (3, 4):                                   # two "iterations", each a new candidate set
        act = rnd(6, 3, A, seed=seed) * 0.3
        with torch.no_grad():
            fresh = m.predict_next_frames(ctx, ctx_act, act, steps=2, generator=torch.Generator().manual_seed(0))
            again = m.predict_next_frames(prefix, None, act, steps=2, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(again, fresh, atol=1e-5)
    with torch.no_grad():
        same_rows = m.predict_next_frames(prefix, None, rnd(2, 3, A, seed=5), steps=2,
                                          generator=torch.Generator().manual_seed(0))
        ref = m.predict_next_frames(ctx, ctx_act, rnd(2, 3, A, seed=5), steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(same_rows, ref, atol=1e-5)      # Bc == B: the prefix's cache is copied, not written
    with pytest.raises(ValueError, match="multiple of the prefix's 2 contexts"):
        m.predict_next_frames(prefix, None, rnd(3, 2, A))
