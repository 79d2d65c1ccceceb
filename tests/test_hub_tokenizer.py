import json

import pytest
import torch

from worldmodel import hub
from worldmodel.tokenizer import ByteTokenizer


def test_save_load_roundtrip_and_errors(tmp_path):
    sd = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    hub.save_pretrained(tmp_path / "m", "toy", {"d": 4}, sd, extra={"task": "reacher"})
    meta = hub.read_config(tmp_path / "m", kind="toy")
    assert meta["config"] == {"d": 4} and meta["task"] == "reacher"
    back = hub.load_state_dict(tmp_path / "m")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert not list((tmp_path / "m").glob("*.tmp"))  # atomic writes leave no temp files
    with pytest.raises(ValueError, match="expected 'other'"):
        hub.read_config(tmp_path / "m", kind="other")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.read_config(tmp_path / "nope")
    assert hub.CHECKSUMS_KEY not in meta  # not an extra: read by verify_weights only
    meta = json.loads((tmp_path / "m" / hub.CONFIG_NAME).read_text())
    assert meta[hub.CHECKSUMS_KEY] == {hub.WEIGHTS_NAME: hub.sha256_file(tmp_path / "m" / hub.WEIGHTS_NAME)}
    (tmp_path / "m" / hub.WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors' fails its checksum"):
        hub.load_state_dict(tmp_path / "m")
    meta.pop(hub.CHECKSUMS_KEY)  # a folder saved before checksums: parsed, and a bad file still named
    (tmp_path / "m" / hub.CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="records no checksum"), pytest.raises(ValueError, match="corrupt or truncated"):
        hub.load_state_dict(tmp_path / "m")


def test_byte_tokenizer_roundtrip_and_specials():
    tok = ByteTokenizer()
    ids = tok.encode("reach → left", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "reach → left"
    assert len(set(tok.special_ids.values())) == len(tok.special_ids)
    assert min(tok.special_ids.values()) >= 256 and tok.vocab_size == 256 + len(tok.special_ids)
    assert ByteTokenizer.format_action([0.123, -0.4]) == "act a0=+0.12 a1=-0.40"
    with pytest.raises(ValueError, match="action names"):
        ByteTokenizer.format_action([0.1], names=["x", "y"])
