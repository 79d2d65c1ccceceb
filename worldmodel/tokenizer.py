"""Byte-level tokenizer with special tokens.

Ids 0..255 are the UTF-8 bytes; specials follow. Byte level keeps the vocabulary
tiny (good for CPU models) and can encode any text, including action strings like
"act dx=+0.12 dy=-0.40" and free-form language commands.
"""
from __future__ import annotations

from collections.abc import Sequence

SPECIALS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<act>", "<eoa>")


class ByteTokenizer:
    n_bytes = 256

    def __init__(self) -> None:
        self.special_ids = {name: self.n_bytes + i for i, name in enumerate(SPECIALS)}
        self.pad_id = self.special_ids["<pad>"]
        self.bos_id = self.special_ids["<bos>"]
        self.eos_id = self.special_ids["<eos>"]
        self.boi_id = self.special_ids["<boi>"]
        self.eoi_id = self.special_ids["<eoi>"]
        self.act_id = self.special_ids["<act>"]
        self.eoa_id = self.special_ids["<eoa>"]

    @property
    def vocab_size(self) -> int:
        return self.n_bytes + len(SPECIALS)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        """Decode bytes, dropping special tokens; invalid UTF-8 is replaced, never raised."""
        return bytes(i for i in ids if 0 <= i < self.n_bytes).decode("utf-8", errors="replace")

    @staticmethod
    def format_action(action: Sequence[float], names: Sequence[str] | None = None) -> str:
        """The text form of an action vector: 'act a0=+0.12 a1=-0.40' (fixed width, 2 decimals)."""
        names = names or [f"a{i}" for i in range(len(action))]
        if len(names) != len(action):
            raise ValueError(f"{len(names)} action names for an action of length {len(action)}")
        return "act " + " ".join(f"{n}={float(v):+.2f}" for n, v in zip(names, action))
