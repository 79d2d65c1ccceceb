"""Packed multimodal sequences: layout, positions, targets and the derived attention masks."""
import pytest
import torch

from worldmodel.config import ModelConfig
from worldmodel.moe import MoEConfig
from worldmodel.sequence import (ACTION_VIDEO, IMAGE_TEXT, MOD_ACTION, MOD_TEXT, MOD_VISION, TEXT, VIDEO, Action,
                                 Document, Frame, SequenceBuilder, Text, collate, document_length,
                                 flex_block_mask, pack_rows, sdpa_mask)
from worldmodel.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
N, C, A = 4, 3, 2


def cfg(enc="embed"):
    return ModelConfig(d_model=32, n_layers=1, n_heads=2, latent_dim=C, frame_grid=(2, 2), action_dim=A,
                       action_encoding=enc, action_scale=0.5, moe=MoEConfig(kind="dense"))


def lat(seed=0):
    return torch.randn(N, C, generator=torch.Generator().manual_seed(seed))


def docs():
    return [
        Document([Text(TOK.encode("hi", bos=True))], TEXT),
        Document([Text(TOK.encode("cap")), Frame(lat(1))], IMAGE_TEXT),
        Document([Frame(lat(2), loss=False), Action(torch.tensor([0.1, -0.2])), Frame(lat(3))], ACTION_VIDEO),
    ]


@pytest.mark.parametrize("enc", ["embed", "text"])
def test_layout_lengths_and_padding(enc):
    c = cfg(enc)
    ds = docs()
    b = pack_rows(ds, 96, c)
    assert b.tokens.shape == (1, 96) and b.latents.shape == (1, 96, C) and b.actions.shape == (1, 96, A)
    lens = [document_length(d, c) for d in ds]
    assert lens[1] == 3 + 2 + 2 * N          # caption + <boi> + noisy + clean + <eoi>
    for i, n in enumerate(lens):
        assert int((b.doc_id == i).sum()) == n
    assert int((b.doc_id == -1).sum()) == 96 - sum(lens)
    assert (b.source[b.doc_id == -1] == -1).all()
    assert b.is_noisy.sum() == 2 * N        # two loss frames
    with pytest.raises(ValueError, match="seq_len"):
        pack_rows(ds, sum(lens) - 1, c)


def test_frame_layout_positions_and_latents():
    c = cfg()
    x = lat(5)
    b = pack_rows([Document([Text([65, 66]), Frame(x)], IMAGE_TEXT)], 2 + 2 + 2 * N, c)
    t = b.tokens[0]
    assert t[2] == TOK.boi_id and t[-1] == TOK.eoi_id
    noisy, clean = slice(3, 3 + N), slice(3 + N, 3 + 2 * N)
    assert b.is_noisy[0, noisy].all() and not b.is_noisy[0, clean].any()
    assert (b.modality[0, noisy] == MOD_VISION).all() and (b.modality[0, clean] == MOD_VISION).all()
    assert (b.frame_id[0, 3:3 + 2 * N] == 0).all() and (b.frame_id[0, :3] == -1).all()
    # <boi> at p, both copies share p+1, <eoi> at p+2
    assert b.pos_seq[0].tolist() == [0, 1, 2] + [3] * (2 * N) + [4]
    assert b.pos_row[0, noisy].tolist() == [0, 0, 1, 1] and b.pos_col[0, noisy].tolist() == [0, 1, 0, 1]
    assert torch.equal(b.latents[0, noisy], x) and torch.equal(b.latents[0, clean], x)
    assert b.latents[0, :3].abs().sum() == 0
    # the caption (and <boi>, which saw it) condition frame 0: CFG dropout hides them from the noisy copy
    assert b.cond_of[0].tolist()[:3] == [0, 0, 0] and (b.cond_of[0, 3:] == -1).all()


def test_text_targets_respect_documents_and_loss_flag():
    c = cfg()
    d1 = Document([Text([10, 11, 12])], TEXT)
    d2 = Document([Text([20, 21], loss=False), Text([22, 23])], TEXT)
    b = pack_rows([d1, d2], 12, c)
    loss = b.text_loss[0].tolist()
    tgt = b.text_targets[0].tolist()
    # d1: positions 0,1 predict 11,12; position 2 must not predict d2's first token
    assert loss[:3] == [True, True, False] and tgt[:2] == [11, 12]
    # d2: 20,21 carry no loss; 21 -> 22 and 22 -> 23 do; last token and padding none
    assert loss[3:7] == [False, True, True, False] and tgt[4:6] == [22, 23]
    assert not any(loss[7:])


@pytest.mark.parametrize("enc", ["embed", "text"])
def test_actions_both_encodings(enc):
    c = cfg(enc)
    a = torch.tensor([0.1, -0.3])
    b = pack_rows([Document([Frame(lat(), loss=False), Action(a), Frame(lat(1))], ACTION_VIDEO)], 64, c)
    act = (b.cond_of[0] == 1) & (b.tokens[0] != TOK.boi_id)   # the action conditions frame 1
    if enc == "embed":
        assert int(act.sum()) == 1
        assert (b.modality[0, act] == MOD_ACTION).all()
        assert torch.allclose(b.actions[0, act][0], a)
    else:
        ids = b.tokens[0, act].tolist()
        assert ids[0] == TOK.act_id and ids[-1] == TOK.eoa_id
        assert TOK.decode(ids) == TOK.format_action((a / c.action_scale).tolist())  # normalised by action_scale
        assert (b.modality[0, act] == MOD_TEXT).all() and b.actions.abs().sum() == 0
    assert not b.text_loss[0].any()                       # action tokens are inputs, no loss


def test_bad_inputs_are_named():
    c = cfg()
    with pytest.raises(ValueError, match=r"\(1, 4, 3\)"):
        pack_rows([Document([Frame(torch.zeros(5, C))], VIDEO)], 64, c)
    with pytest.raises(ValueError, match="vocabulary"):
        pack_rows([Document([Text([9999])], TEXT)], 8, c)
    with pytest.raises(ValueError, match="source"):
        pack_rows([Document([Text([1])], 7)], 8, c)
    with pytest.raises(ValueError, match=r"action has shape"):
        pack_rows([Document([Action(torch.zeros(3))], ACTION_VIDEO)], 8, c)
    with pytest.raises(ValueError, match="one length"):
        collate([pack_rows(docs(), 64, c), pack_rows(docs(), 80, c)])


def _visible(m, q, k):
    return bool(m[0, 0, q, k])


def test_mask_rules():
    c = cfg()
    ds = [Document([Text([65, 66]), Frame(lat())], IMAGE_TEXT), Document([Frame(lat(1)), Text([67, 68])], IMAGE_TEXT)]
    b = pack_rows(ds, 40, c)
    m = sdpa_mask(b)
    L = b.seq_len
    idx = torch.arange(L)
    d0, d1, pad = (b.doc_id[0] == 0), (b.doc_id[0] == 1), (b.doc_id[0] == -1)
    noisy0 = idx[(b.frame_id[0] == 0) & b.is_noisy[0]]
    clean0 = idx[(b.frame_id[0] == 0) & ~b.is_noisy[0]]
    # text is causal
    assert _visible(m, 1, 0) and not _visible(m, 0, 1)
    # a copy of a frame is bidirectional: first token sees the last
    assert _visible(m, int(noisy0[0]), int(noisy0[-1])) and _visible(m, int(clean0[0]), int(clean0[-1]))
    # noisy sees earlier clean tokens (the caption and <boi>) but not its clean copy (the answer)
    assert _visible(m, int(noisy0[0]), 0) and _visible(m, int(noisy0[0]), 2)
    assert not any(_visible(m, int(q), int(k)) for q in noisy0 for k in clean0)
    # nothing outside the noisy copy attends to it
    others = idx[~((b.frame_id[0] == 0) & b.is_noisy[0])]
    assert not m[0, 0][others][:, noisy0].any()
    # documents never attend across each other; padding is invisible to real tokens
    assert not m[0, 0][d1][:, d0].any() and not m[0, 0][d0][:, d1].any()
    assert not m[0, 0][~pad][:, pad].any()
    # every query sees at least itself (no empty softmax rows)
    assert m[0, 0].diagonal().all()


def test_cond_dropout_mask_hides_only_conditioning_from_noisy_copy():
    c = cfg()
    b = pack_rows([Document([Frame(lat(), loss=False), Action(torch.tensor([0.1, 0.2])), Frame(lat(1))],
                            ACTION_VIDEO)], 32, c)
    drop = b.is_noisy.clone()
    m0, m1 = sdpa_mask(b)[0, 0], sdpa_mask(b, drop)[0, 0]
    act = (b.cond_of[0] == 1).nonzero()[:, 0]                      # the action and frame 1's <boi>
    assert len(act) == 2 and b.tokens[0, act[-1]] == TOK.boi_id
    noisy = b.is_noisy[0].nonzero()[:, 0]
    assert m0[noisy][:, act].all() and not m1[noisy][:, act].any()
    changed = (m0 != m1).nonzero()
    assert set(changed[:, 0].tolist()) <= set(noisy.tolist())       # only noisy queries change
    assert set(changed[:, 1].tolist()) <= set(act.tolist())         # only the action keys are hidden


def test_builder_chunks_equal_pack_rows():
    """A stream built chunk by chunk (as the KV-cached rollout does) has pack_rows' layout."""
    c = cfg()
    d = Document([Frame(lat(), loss=False), Action(torch.tensor([0.1, 0.2])), Frame(lat(1))], ACTION_VIDEO)
    ref = pack_rows([d], document_length(d, c), c)
    sb = SequenceBuilder(c, 1)
    sb.new_document(ACTION_VIDEO)
    sb.frame(lat(), loss=False)
    sb.action(torch.tensor([0.1, 0.2]))
    sb.begin_frame()
    chunks = [sb.take()]
    sb.frame_tokens(lat(1), noisy=True)
    chunks.append(sb.take())
    sb.frame_tokens(lat(1), noisy=False)
    sb.end_frame()
    chunks.append(sb.take())
    from worldmodel.sequence import concat
    got = concat(chunks)
    for name in ("tokens", "modality", "frame_id", "is_noisy", "doc_id", "index", "pos_seq", "pos_row",
                 "pos_col", "cond_of", "latents", "actions"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name


def test_ragged_text_prefix_is_left_padded_and_invisible():
    c = cfg()
    sb = SequenceBuilder(c, 2)
    sb.new_document(ACTION_VIDEO)
    sb.text([[65, 66, 67], [68]], loss=False)
    sb.frame(torch.stack([lat(), lat(1)]), loss=False)
    b = sb.take()
    assert b.doc_id[1, :2].tolist() == [-1, -1] and b.doc_id[0, :3].tolist() == [0, 0, 0]
    # both rows' frames sit at the same position relative to their own text
    assert b.pos_seq[0, 3] == 3 and b.pos_seq[1, 3] == 1
    m = sdpa_mask(b)
    assert not m[1, 0, 3:, :2].any()


def _attend(q, k, v, mask):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="FlexAttention block masks on CUDA need a GPU"))])
@pytest.mark.parametrize("with_drop", [False, True])
def test_flex_block_mask_matches_sdpa_mask(device, with_drop):
    """Same vectors, same rule: flex_attention with the BlockMask == SDPA with the dense mask."""
    import warnings

    from torch.nn.attention.flex_attention import flex_attention

    c = cfg()
    rows = [pack_rows(docs(), 150, c), pack_rows(docs()[::-1] + docs()[:1], 150, c)]
    b = collate(rows).to(device)
    drop = b.is_noisy.clone() if with_drop else None
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(2, 2, 150, 8, generator=g, device=device) for _ in range(3))
    ref = _attend(q, k, v, sdpa_mask(b, drop))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # eager flex on CPU warns that it is unfused
        out = flex_attention(q, k, v, block_mask=flex_block_mask(b, drop))
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
