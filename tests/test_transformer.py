"""The trunk through the real model: causality, frame bidirectionality, document isolation,
clean context, RoPE, KV cache and the Flex backend."""
import warnings

import pytest
import torch

from worldmodel.config import ModelConfig
from worldmodel.layers import Rotary, apply_rotary
from worldmodel.moe import MoEConfig
from worldmodel.sequence import (ACTION_VIDEO, IMAGE_TEXT, TEXT, Action, Document, Frame, SequenceBuilder, Text,
                                 collate, concat, document_length, mask_from_vectors, pack_rows)
from worldmodel.transfusion import Transfusion

N, C, A = 4, 6, 2
FFN = {"dense": MoEConfig(kind="dense"), "moe": MoEConfig(kind="moe", n_experts=4, top_k=2, granularity=4)}


def model(ffn="moe", enc="embed", **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, latent_dim=C, frame_grid=(2, 2), action_dim=A,
                      action_encoding=enc, moe=FFN[ffn], **kw)
    return Transfusion(cfg).eval()


def lat(seed):
    return torch.randn(N, C, generator=torch.Generator().manual_seed(seed))


def av_doc(seed=0, loss=True):
    g = torch.Generator().manual_seed(seed)
    return Document([Frame(lat(seed), loss=False), Action(torch.rand(A, generator=g)), Frame(lat(seed + 1), loss=loss),
                     Action(torch.rand(A, generator=g)), Frame(lat(seed + 2), loss=loss)], ACTION_VIDEO)


def text_doc():
    return Document([Text(list(b"the arm moves left")), Frame(lat(9)), Text(list(b"ok"))], IMAGE_TEXT)


def hidden(m, b, z=None):
    with torch.no_grad():
        return m(b, z=z).hidden


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_later_tokens_never_change_earlier_outputs(ffn):
    m = model(ffn)
    b = pack_rows([text_doc()], document_length(text_doc(), m.cfg), m.cfg)
    h0 = hidden(m, b)
    for j in (5, b.seq_len - 1):                   # a caption token, the last text token
        b2 = pack_rows([text_doc()], b.seq_len, m.cfg)
        b2.tokens[0, j] = (b2.tokens[0, j] + 1) % 256
        h1 = hidden(m, b2)
        assert torch.allclose(h1[0, :j], h0[0, :j], atol=1e-5)
        assert not torch.allclose(h1[0, j], h0[0, j], atol=1e-4)


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_frame_is_bidirectional_but_causal_to_the_past(ffn):
    m = model(ffn)
    d = av_doc(loss=False)
    b = pack_rows([d], document_length(d, m.cfg), m.cfg)
    h0 = hidden(m, b)
    f1 = (b.frame_id[0] == 1).nonzero()[:, 0]            # clean tokens of the second frame
    z = b.latents.clone()
    z[0, f1[-1]] += 1.0                                   # change the frame's last token
    h1 = hidden(m, b, z)
    diff = (h1 - h0).abs().amax(-1)[0]
    assert (diff[f1] > 1e-4).all()                        # every token of the frame changes
    assert (diff[: int(f1[0])] < 1e-5).all()              # nothing before it does
    assert (diff[int(f1[-1]) + 1:] > 1e-4).all()          # later tokens see it


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_packed_documents_do_not_attend_across(ffn):
    m = model(ffn)
    a, t = av_doc(3), text_doc()
    la, lt = document_length(a, m.cfg), document_length(t, m.cfg)
    both = hidden(m, pack_rows([a, t], la + lt + 5, m.cfg))
    alone_t = hidden(m, pack_rows([t], lt, m.cfg))
    alone_a = hidden(m, pack_rows([a], la, m.cfg))
    assert torch.allclose(both[0, la:la + lt], alone_t[0], atol=1e-5)
    assert torch.allclose(both[0, :la], alone_a[0], atol=1e-5)


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_noisy_copies_are_invisible_to_later_tokens(ffn):
    m = model(ffn)
    d = av_doc()
    b = pack_rows([d], document_length(d, m.cfg), m.cfg)
    h0 = hidden(m, b)
    noisy1 = (b.is_noisy[0] & (b.frame_id[0] == 1)).nonzero()[:, 0]
    z = b.latents.clone()
    z[0, noisy1] = torch.randn(len(noisy1), C) * 3    # a totally different noisy input
    h1 = hidden(m, b, z)
    diff = (h1 - h0).abs().amax(-1)[0]
    assert (diff[noisy1] > 1e-4).all()
    others = torch.ones_like(diff, dtype=torch.bool)
    others[noisy1] = False
    assert (diff[others] < 1e-5).all()


def test_rope_is_relative_and_2d_axes_rotate():
    rot = Rotary(16, frac_2d=0.5)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        cq, sq = rot(*(torch.tensor([[v]]) for v in pq))
        ck, sk = rot(*(torch.tensor([[v]]) for v in pk))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    assert torch.allclose(score((5, 1, 2), (3, 0, 0)), score((12, 1, 2), (10, 0, 0)), atol=1e-5)
    assert not torch.allclose(score((5, 1, 2), (5, 1, 0)), score((5, 1, 2), (5, 1, 2)), atol=1e-4)
    assert not torch.allclose(score((5, 1, 2), (5, 0, 2)), score((5, 1, 2), (5, 1, 2)), atol=1e-4)


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_kv_cached_chunks_equal_the_full_forward(ffn):
    m = model(ffn)
    d = av_doc(loss=False)
    ref = hidden(m, pack_rows([d], document_length(d, m.cfg), m.cfg))
    sb = SequenceBuilder(m.cfg, 1)
    sb.document(d)
    full = sb.take()
    cache, keys, outs = m.trunk.new_cache(), None, []
    for lo, hi in ((0, 7), (7, 15), (15, full.seq_len)):    # chunks end after a <boi>, as in rollouts
        chunk = type(full)(**{k: v[:, lo:hi] for k, v in vars(full).items()})
        keys = chunk if keys is None else concat([keys, chunk])
        with torch.no_grad():
            x = m._embed(chunk, chunk.latents, m.time_emb(torch.ones(chunk.tokens.shape)))
            outs.append(m.trunk(x, (chunk.pos_seq, chunk.pos_row, chunk.pos_col),
                                (chunk.modality == 1).long(), mask_from_vectors(chunk, keys), cache, commit=True))
    assert cache.length == full.seq_len
    assert torch.allclose(torch.cat(outs, 1), ref, atol=1e-5)


def test_flex_backend_matches_sdpa_forward():
    """attn_backend='flex' (eager FlexAttention on CPU, forward only) == 'sdpa'."""
    m_sdpa, m_flex = model("moe", attn_backend="sdpa"), model("moe", attn_backend="flex")
    m_flex.load_state_dict(m_sdpa.state_dict())
    b = collate([pack_rows([av_doc(1), text_doc()], 96, m_sdpa.cfg), pack_rows([text_doc(), av_doc(4)], 96, m_sdpa.cfg)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(hidden(m_flex, b), hidden(m_sdpa, b), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention training (compiled) needs CUDA")
def test_flex_backend_matches_sdpa_on_cuda_with_grad():
    m_sdpa, m_flex = model("moe", attn_backend="sdpa").cuda(), model("moe", attn_backend="flex").cuda()
    m_flex.load_state_dict(m_sdpa.state_dict())
    b = collate([pack_rows([av_doc(1), text_doc()], 128, m_sdpa.cfg)] * 2).to("cuda")
    outs = []
    for m in (m_sdpa, m_flex):
        m.train()
        loss, _ = m.loss(b, generator=torch.Generator("cuda").manual_seed(0))
        loss.backward()
        outs.append((loss.detach(), m.latent_in.weight.grad.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-4)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-4)


def test_max_seq_len_is_enforced():
    m = model("dense", max_seq_len=16)
    b = pack_rows([text_doc()], 32, m.cfg)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        m(b)


@pytest.mark.slow
def test_compiled_blocks_with_flex_match_sdpa():
    """Blocks under torch.compile (as the trainer runs them) with the Flex backend == eager SDPA.

    Guards a real inductor pitfall: compiled flex_attention read a strided (permuted) v wrongly
    on CPU until Attention passed contiguous q/k/v."""
    m_sdpa, m_flex = model("dense", attn_backend="sdpa"), model("dense", attn_backend="flex")
    m_flex.load_state_dict(m_sdpa.state_dict())
    b = collate([pack_rows([av_doc(1), text_doc()], 64, m_sdpa.cfg)] * 2)
    m_flex.trunk.blocks[0].compile()     # one compiled block keeps the inductor compile short
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(hidden(m_flex, b), hidden(m_sdpa, b), atol=1e-5)
