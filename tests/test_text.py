"""Text sources: the offline default is real English; files, folders and captions; seeded order."""
import json
import re

import numpy as np
import pytest

from pretrain.data.shards import Episode, ShardWriter
from pretrain.data.text import caption_documents, text_documents

COMMON = ("the", "of", "and", "to", "is", "a", "in")


def test_default_corpus_is_english():
    docs = list(text_documents(seed=0))
    assert len(docs) > 50 and sum(map(len, docs)) > 200_000
    words = re.findall(r"[a-z]+", " ".join(docs).lower())
    share = sum(w in COMMON for w in words) / len(words)
    assert share > 0.12  # function words make up ~15-25% of English prose
    letters = sum(c.isalpha() or c.isspace() for c in docs[0]) / len(docs[0])
    assert letters > 0.7


def test_seeded_order():
    a, b, c = (list(text_documents(seed=s)) for s in (1, 1, 2))
    assert a == b and a != c and sorted(a) == sorted(c)
    assert list(text_documents(shuffle=False)) == list(text_documents(["pydoc"], shuffle=False))


def test_files_folders_jsonl(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("A plain text document.")
    with open(tmp_path / "sub" / "b.jsonl", "w") as f:
        for i in range(5):
            f.write(json.dumps({"text": f"line document {i}", "meta": i}) + "\n")
    (tmp_path / "ignored.csv").write_text("x,y")
    docs = list(text_documents([str(tmp_path)], seed=0, buffer=2))
    assert sorted(docs) == sorted(["A plain text document."] + [f"line document {i}" for i in range(5)])
    assert list(text_documents([str(tmp_path / "a.txt")])) == ["A plain text document."]
    (tmp_path / "bad.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(ValueError, match="bad.jsonl' line 1 has no string field 'text'"):
        list(text_documents([str(tmp_path / "bad.jsonl")]))
    with pytest.raises(ValueError, match="not a file, folder"):
        text_documents([str(tmp_path / "nope.txt")])
    with pytest.raises(ValueError, match="suffix '.csv'"):
        text_documents([str(tmp_path / "ignored.csv")])


def test_caption_documents(tmp_path):
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "d", "reacher", episodes_per_shard=1) as w:
        for i in range(2):
            w.add(Episode(frames=rng.integers(0, 255, (4, 4, 4, 3), dtype=np.uint8),
                          actions=np.zeros((3, 2)), states=np.zeros((4, 2)), rewards=np.zeros(3),
                          goal_state=np.zeros(2), goal_frame=np.zeros((4, 4, 3), np.uint8),
                          captions=["The arm is left.", "The arm is left.", "The arm is up.",
                                    f"Episode {i} ends."]))
    docs = list(caption_documents(tmp_path / "d"))
    assert docs == [f"The arm is left. The arm is up. Episode {i} ends." for i in range(2)]
    mixed = list(text_documents(["pydoc", f"captions:{tmp_path / 'd'}"], seed=0))
    assert all(d in mixed for d in docs) and len(mixed) > 50
