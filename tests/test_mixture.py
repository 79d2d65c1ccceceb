"""Data mixture: token ratios, packing, exact data-position save/restore, layouts, disk loading."""
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pretrain.data.mixture import (DataConfig, EpisodeData, Mixture, SOURCE_NAMES, WindowIndex, holdout_mask,
                                   labelled_episodes, labelled_mask, load_episodes, load_mixture_episodes)
from worldmodel.errors import DataError
from worldmodel.sequence import ACTION_VIDEO, IMAGE_TEXT, TEXT, VIDEO, Action, Frame, Text, collate, \
    document_length, pack_rows

N, C, A = 4, 8, 2
SEQ_CFG = SimpleNamespace(frame_grid=(2, 2), latent_dim=C, action_dim=A, action_encoding="text",
                          action_scale=0.5, vocab_size=263)


def length(doc):
    return document_length(doc, SEQ_CFG)


def episodes(seed=0, e=5, t=11):
    rng = np.random.default_rng(seed)
    caps = np.array([[f"episode {i} frame {j}: the arm points {'left' if j % 2 else 'right'}"
                      for j in range(t + 1)] for i in range(e)])
    return [EpisodeData(latents=rng.normal(size=(e, t + 1, N, C)).astype(np.float32),
                        actions=rng.uniform(-0.5, 0.5, (e, t, A)).astype(np.float32), captions=caps)]


def two_datasets():
    """Dataset 0: 2 episodes, latents > 0; dataset 1: 8 episodes, latents < 0 (18 and 72 windows of 4 frames)."""
    (a,), (b,) = episodes(seed=1, e=2), episodes(seed=2, e=8)
    a.latents, b.latents = np.abs(a.latents) + 0.1, -np.abs(b.latents) - 0.1
    b.dataset = 1
    return [a, b]


def from_first_dataset(doc) -> bool:
    return bool((next(s for s in doc.segments if isinstance(s, Frame)).latents > 0).all())


@pytest.fixture()
def corpus(tmp_path):
    # a small local corpus so text epochs wrap within the test
    p = tmp_path / "corpus.jsonl"
    p.write_text("\n".join(f'{{"text": "document {i}: ' + "lorem ipsum " * (3 + i % 7) + '"}' for i in range(12)))
    return str(p)


def cfg_for(corpus, **kw):
    base = DataConfig(dataset="", text_sources=[corpus], seq_len=160, text=0.3, image_text=0.2, video=0.2,
                      action_video=0.3, context_frames=2, predict_frames=2, video_frames=3, holdout=0.0)
    return replace(base, **kw)


def rows_equal(a, b):
    pa, pb = collate([pack_rows(r, 160, SEQ_CFG) for r in a]), collate([pack_rows(r, 160, SEQ_CFG) for r in b])
    return all(torch.equal(getattr(pa, f), getattr(pb, f)) for f in ("tokens", "latents", "actions", "source",
                                                                    "doc_id", "is_noisy", "text_loss"))


def test_ratios_honoured_and_rows_fit(corpus):
    cfg = cfg_for(corpus)
    mix = Mixture(cfg, length, episodes())
    rows = mix.next_rows(300)
    counted = {k: 0 for k in SOURCE_NAMES}
    for row in rows:
        assert sum(length(d) for d in row) <= cfg.seq_len
        for d in row:
            counted[d.source] += length(d)
    total = sum(counted.values())
    want = cfg.weights()
    for k, w in want.items():
        assert abs(counted[k] / total - w) < 0.01, (SOURCE_NAMES[k], counted[k] / total, w)
    assert mix.token_shares()["action_video"] == pytest.approx(counted[ACTION_VIDEO] / total)
    # rows are dense: tail filling keeps padding small
    used = total / (len(rows) * cfg.seq_len)
    assert used > 0.9, used
    # a skewed mixture is honoured too
    mix2 = Mixture(cfg_for(corpus, text=0.05, image_text=0.05, video=0.0, action_video=0.9), length, episodes())
    shares = {}
    for row in mix2.next_rows(300):
        for d in row:
            shares[d.source] = shares.get(d.source, 0) + length(d)
    assert VIDEO not in shares and abs(shares[ACTION_VIDEO] / sum(shares.values()) - 0.9) < 0.01


@pytest.mark.parametrize("data", ["one dataset", "two weighted datasets"])
def test_data_position_restores_identical_batches(corpus, data):
    several = {"dataset": ["a", "b"], "dataset_weights": [1.0, 3.0]}
    cfg = cfg_for(corpus, **(several if data == "two weighted datasets" else {}))
    episodes = two_datasets if data == "two weighted datasets" else globals()["episodes"]
    mix = Mixture(cfg, length, episodes())
    mix.next_rows(37)  # wraps the small text corpus at least once
    for _ in range(200):  # stop where a document waits to open the next row
        if mix.pending is not None:
            break
        mix.next_row()
    state = mix.state_dict()
    assert state["text"]["epoch"] >= 1 and state["pending"] is not None
    expected = mix.next_rows(25)
    fresh = Mixture(cfg, length, episodes())
    assert not rows_equal(fresh.next_rows(25), expected)  # a different position gives different data
    fresh.load_state_dict(state)
    assert rows_equal(fresh.next_rows(25), expected)
    # the state is a snapshot: using the mixture after state_dict() does not change it
    again = Mixture(cfg, length, episodes())
    again.load_state_dict(state)
    assert rows_equal(again.next_rows(25), expected)
    # a resumed run that names other datasets or weights would continue another mixture: refused
    if data == "two weighted datasets":
        for other in ({"dataset": ["a", "c"]}, {"dataset_weights": [1.0, 1.0]}):
            changed = Mixture(replace(cfg, **other), length, episodes())
            with pytest.raises(ValueError, match="the checkpoint was trained on datasets"):
                changed.load_state_dict(state)


@pytest.mark.parametrize("weights, first_share", [([], 18 / 90), ([1.0, 1.0], 0.5), ([3.0, 1.0], 0.75)])
def test_two_datasets_are_drawn_in_the_configured_proportion(corpus, weights, first_share):
    # no weights: uniform over all windows (each dataset by its windows, as one dataset was); else by weight
    cfg = cfg_for(corpus, dataset=["a", "b"], dataset_weights=weights, text=0.0, image_text=0.0, video=0.0,
                  action_video=1.0)
    docs = [d for row in Mixture(cfg, length, two_datasets()).next_rows(600) for d in row]
    share = np.mean([from_first_dataset(d) for d in docs])
    assert len(docs) >= 600 and abs(share - first_share) < 0.05, share

def test_dataset_weights_must_fit_the_datasets(corpus):
    cfg = cfg_for(corpus, dataset=["a", "b"], dataset_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"dataset_weights=\[1.0\], expected 2 weights"):
        Mixture(replace(cfg, dataset_weights=[1.0]), length, two_datasets())
    with pytest.raises(ValueError, match=r"datasets \[1\] .* positive weight but no windows"):
        Mixture(cfg, length, two_datasets()[:1])


def test_several_datasets_are_split_each_and_must_share_what_the_model_reads(tmp_path):
    a, b = write_dataset(tmp_path / "a"), write_dataset(tmp_path / "b", task="point_maze", episodes=5)
    cfg = DataConfig(dataset=[str(a.root), str(b.root)], holdout=0.2)
    held = lambda parts: sorted({(p.dataset, int(v) // 100) for p in parts    # noqa: E731
                                  for v in np.asarray(p.latents)[:, 0, 0, 0]})
    assert held(load_mixture_episodes(cfg, "enc", "val")) == [(0, 4), (0, 9), (1, 4)]   # each dataset's own split
    assert len(held(load_mixture_episodes(cfg, "enc", "train"))) == 8 + 4
    assert held(load_mixture_episodes(replace(cfg, dataset=str(a.root)), "enc", "val")) == [(0, 4), (0, 9)]
    for name, differs, needle in [("other_encoder", {"encoder": "other"}, "no cached latents for encoder 'enc'"),
                                  ("three_actions", {"action_dim": 3}, "has action dim 3, but"),
                                  ("wider_latents", {"channels": C + 1}, f"latents of shape (N, C) ({N}, {C + 1})"),
                                  ("bigger_frames", {"image": 16}, "has frame size 16, but")]:
        bad = write_dataset(tmp_path / name, **differs)
        with pytest.raises(DataError) as err:
            load_mixture_episodes(replace(cfg, dataset=[str(a.root), str(bad.root)]), "enc")
        assert str(bad.root) in str(err.value) and needle in str(err.value), str(err.value)
    other_rae = write_dataset(tmp_path / "other_rae")       # same encoder id, another RAE's normalisation
    for ds, fingerprint in ((a, "1" * 64), (other_rae, "2" * 64)):
        ds.update_manifest(lambda m, f=fingerprint: [s["latents"]["enc"].update(fingerprint=f) for s in m["shards"]])
    with pytest.raises(DataError, match=f"{other_rae.root}' has 'enc' latents from the RAE '2222"):
        load_mixture_episodes(replace(cfg, dataset=[str(a.root), str(other_rae.root)]), "enc")
    with pytest.raises(ValueError, match="data.dataset=\\[\\], expected a dataset root or a non-empty list"):
        load_mixture_episodes(replace(cfg, dataset=[]), "enc")


def test_action_video_layout(corpus):
    eps = episodes()
    mix = Mixture(cfg_for(corpus, text=0.0, image_text=0.0, video=0.0, action_video=1.0), length, eps)
    doc = mix.next_row()[0]
    assert doc.source == ACTION_VIDEO
    kinds = [type(s).__name__ for s in doc.segments]
    assert kinds == ["Frame", "Action", "Frame", "Action", "Frame", "Action", "Frame"]
    frames = [s for s in doc.segments if isinstance(s, Frame)]
    assert [f.loss for f in frames] == [False, False, True, True]  # 2 clean context, 2 predicted
    # the frames and actions are one consecutive window of one episode
    lat = torch.from_numpy(eps[0].latents)
    hits = [(e, t) for e in range(lat.shape[0]) for t in range(lat.shape[1]) if torch.equal(lat[e, t], frames[0].latents)]
    (e, s), = hits
    for i, f in enumerate(frames):
        assert torch.equal(f.latents, lat[e, s + i])
    acts = [s.values for s in doc.segments if isinstance(s, Action)]
    for i, a in enumerate(acts):
        assert torch.equal(a, torch.from_numpy(eps[0].actions[e, s + i]))


def test_action_video_jumps_carry_every_action_between_shown_frames(corpus):
    eps = episodes(t=20)
    K = 4
    mix = Mixture(cfg_for(corpus, text=0.0, image_text=0.0, video=0.0, action_video=1.0, max_jump=K,
                          seq_len=320), length, eps)   # text-encoded actions: ~20 tokens each
    lat, act = torch.from_numpy(eps[0].latents), torch.from_numpy(eps[0].actions)
    predicted = []
    for doc in (d for _ in range(40) for d in mix.next_row()):
        frames = [s for s in doc.segments if isinstance(s, Frame)]
        assert [f.loss for f in frames] == [False, False, True, True]
        (e, t), = [(e, t) for e in range(lat.shape[0]) for t in range(lat.shape[1])
                   if torch.equal(lat[e, t], frames[0].latents)]
        jumps, run = [], 0                                    # actions since the last frame shown
        for seg in doc.segments[1:]:
            if isinstance(seg, Action):
                assert torch.equal(seg.values, act[e, t + run])    # the actions in order, none skipped
                run += 1
            else:
                t += run
                assert torch.equal(seg.latents, lat[e, t])         # the frame after all of them
                jumps.append(run)
                run = 0
        assert jumps[0] == 1 and all(1 <= k <= K for k in jumps[1:])   # context frames are one step apart
        predicted += jumps[1:]
    assert set(predicted) == set(range(1, K + 1))             # every jump length occurs
    assert len({length(d) for _ in range(10) for d in mix.next_row()}) > 1
    with pytest.raises(ValueError, match="max_jump"):
        Mixture(cfg_for(corpus, max_jump=0), length, eps)


def test_image_text_both_directions(corpus):
    mix = Mixture(cfg_for(corpus, text=0.0, image_text=1.0, video=0.0, action_video=0.0), length, episodes())
    docs = [d for r in mix.next_rows(40) for d in r]
    firsts = {type(d.segments[0]).__name__ for d in docs}
    assert firsts == {"Text", "Frame"}
    for d in docs:
        assert d.source == IMAGE_TEXT
        text = next(s for s in d.segments if isinstance(s, Text))
        frame = next(s for s in d.segments if isinstance(s, Frame))
        assert text.loss != frame.loss  # exactly one side is the target
        assert bytes(i for i in text.ids if i < 256).decode().startswith("episode ")


def test_text_only_and_errors(corpus):
    mix = Mixture(cfg_for(corpus, text=1.0, image_text=0.0, video=0.0, action_video=0.0), length, None)
    rows = mix.next_rows(5)
    assert all(d.source == TEXT for r in rows for d in r)
    with pytest.raises(ValueError, match="need episode data"):
        Mixture(cfg_for(corpus), length, None)
    with pytest.raises(ValueError, match="seq_len=40"):
        Mixture(cfg_for(corpus, seq_len=40), length, episodes())
    with pytest.raises(ValueError, match="must be >= 0"):
        cfg_for(corpus, video=-1.0).weights()
    with pytest.raises(ValueError, match="do not fit"):
        Mixture(cfg_for(corpus, video_frames=50), length, episodes())


def write_dataset(root, task="reacher", action_dim=A, encoder="enc", channels=C, image=8, episodes=10, steps=6,
                  action_scale=None):
    """A dataset on disk with cached latents of `encoder` whose first value encodes (episode, t); with
    `action_scale`, its task spec's bound, its actions the same fractions of it whatever the bound."""
    from pretrain.data.shards import Dataset, Episode, ShardWriter, latent_file, sha256_file
    rng = np.random.default_rng(0)
    spec = {} if action_scale is None else {"action_scale": action_scale}
    with ShardWriter(root, task, {}, task_spec=spec, episodes_per_shard=4) as w:
        for i in range(episodes):
            w.add(Episode(frames=rng.integers(0, 256, (steps + 1, image, image, 3), dtype=np.uint8),
                          actions=(rng.uniform(-1, 1, (steps, action_dim)) * (action_scale or 1)).astype(np.float32),
                          states=np.zeros((steps + 1, 3), np.float32), rewards=np.zeros(steps, np.float32),
                          goal_state=np.zeros(2, np.float32), goal_frame=np.zeros((image, image, 3), np.uint8),
                          captions=[f"ep {i} t {t}" for t in range(steps + 1)], seed=i))
    ds = Dataset(root)
    for i, entry in enumerate(ds.shards):
        e = entry["n_episodes"]
        lat = np.zeros((e, steps + 1, N, channels), np.float32)
        lat[:, :, 0, 0] = (entry["first_episode"] + np.arange(e))[:, None] * 100 + np.arange(steps + 1)[None]
        rel = latent_file(i, encoder)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / rel, lat)
        ds.record_latents(i, encoder, rel, sha256_file(root / rel), lat.shape)
    return ds


def test_holdout_and_disk_loading(tmp_path):
    root = tmp_path / "ds"
    ds = write_dataset(root)
    train = load_episodes(root, "enc", "train", holdout=0.2)
    val = load_episodes(root, "enc", "val", holdout=0.2)
    ids = lambda parts: sorted({int(v) // 100 for p in parts for v in np.asarray(p.latents)[:, 0, 0, 0]})
    assert ids(val) == [4, 9] and ids(train) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert holdout_mask(10, 0.2).sum() == 2
    for p in train:  # captions and actions travel with their latents
        for j in range(len(p.captions)):
            ep = int(np.asarray(p.latents)[j, 0, 0, 0]) // 100
            assert p.captions[j, 0] == f"ep {ep} t 0"
            assert np.array_equal(p.actions[j], ds[ep].actions)
    with pytest.raises(ValueError, match="no cached latents for encoder 'other'"):
        load_episodes(root, "other")


def shown_episodes(docs, source) -> set[int]:
    """The episodes whose frames the documents of `source` show (write_dataset's latents: episode * 100 + t)."""
    return {int(s.latents[0, 0]) // 100 for d in docs if d.source == source for s in d.segments
            if isinstance(s, Frame)}


@pytest.mark.parametrize("unlabelled_video", [True, False])
def test_action_video_comes_only_from_the_labelled_episodes(tmp_path, corpus, unlabelled_video):
    ds = write_dataset(tmp_path / "ds")
    cfg = cfg_for(corpus, dataset=str(ds.root), holdout=0.2, labelled=0.25, unlabelled_video=unlabelled_video)
    train = load_mixture_episodes(cfg, "enc", "train")    # episodes 0-3 and 5-8 (every 5th is held out)
    everyone, labelled = {0, 1, 2, 3, 5, 6, 7, 8}, {3, 8}  # the 4th and 8th training episodes: spread out
    for seed in (0, 1):                                    # the same subset whatever the data order
        docs = [d for r in Mixture(replace(cfg, seed=seed), length, train).next_rows(200) for d in r]
        assert shown_episodes(docs, ACTION_VIDEO) == labelled
        others = everyone if unlabelled_video else labelled
        assert shown_episodes(docs, VIDEO) == others and shown_episodes(docs, IMAGE_TEXT) == others
    val = Mixture(cfg, length, load_mixture_episodes(cfg, "enc", "val"), split="val").next_rows(60)
    assert shown_episodes([d for r in val for d in r], ACTION_VIDEO) == {4, 9}   # evaluation: every held-out one


def test_labelled_subset_is_the_share_asked_spread_out_per_dataset():
    for n, share in [(100, 0.1), (2000, 0.1), (95, 0.3), (7, 1.0)]:
        idx = np.flatnonzero(labelled_mask(n, share))
        assert len(idx) == int(n * share) and idx[0] < np.ceil(1 / share)
        assert np.diff(idx).max(initial=1) <= np.ceil(1 / share)   # no long stretch without a label
    assert [list(i) for i in labelled_episodes(two_datasets(), 0.5)] == [[1], [1, 3, 5, 7]]   # each dataset its own
    assert labelled_episodes(two_datasets(), 1.0) is None
    with pytest.raises(DataError, match="labels none of the 2 training episodes of dataset 0"):
        labelled_episodes(two_datasets(), 0.25)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=f"data.labelled={bad}, expected a share .* in \\(0, 1\\]"):
            labelled_mask(10, bad)


def test_every_episode_labelled_draws_the_batches_of_before(corpus):
    cfg = cfg_for(corpus)
    before = Mixture(cfg, length, episodes()).next_rows(40)
    assert rows_equal(Mixture(replace(cfg, labelled=1.0, unlabelled_video=False), length, episodes()).next_rows(40),
                      before)
    eps = episodes()   # a subset of every episode is no subset: the same windows in the same order
    full, subset = WindowIndex(eps, 4), WindowIndex(eps, 4, episodes=[np.arange(len(p.latents)) for p in eps])
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    assert all(full.sample(rng_a)[1:] == subset.sample(rng_b)[1:] for _ in range(50))


def test_each_task_feeds_its_actions_as_a_fraction_of_its_own_bound(tmp_path, corpus):
    """reacher (bound 0.2) beside point_maze (1.0): the model's scale is the largest, and the same fraction of
    each task's bound reaches the model as the same input; one task alone keeps its actions as they are."""
    reacher = write_dataset(tmp_path / "reacher", action_scale=0.2)
    maze = write_dataset(tmp_path / "point_maze", task="point_maze", action_scale=1.0)   # reacher's fractions
    cfg = cfg_for(corpus, dataset=[str(reacher.root), str(maze.root)], text=0.0, image_text=0.0, video=0.0,
                  action_video=1.0)
    parts = load_mixture_episodes(cfg, "enc")
    fed = [np.concatenate([p.actions for p in parts if p.dataset == d]) for d in (0, 1)]
    np.testing.assert_allclose(fed[0], fed[1], rtol=1e-6)        # in the model's units (scale 1.0): the fractions
    assert np.abs(fed[0]).max() > 0.5                            # reacher's stretched past its bound of 0.2
    only_reacher = Mixture(replace(cfg, dataset_weights=[1.0, 0.0]), length, parts).next_rows(20)
    shown = np.stack([s.values.numpy() for r in only_reacher for d in r for s in d.segments if isinstance(s, Action)])
    assert np.abs(shown).max() > 0.5                             # what the mixture hands the model
    alone = load_mixture_episodes(replace(cfg, dataset=str(reacher.root)), "enc")
    as_stored = load_episodes(reacher.root, "enc", holdout=0.0)
    assert all(np.array_equal(p.actions, q.actions) for p, q in zip(alone, as_stored))
