"""`lw encode-dataset`: cache the frozen RAE encoder's normalised latents beside each shard.

    lw encode-dataset data=data/reacher rae=runs/rae_reacher
    lw encode-dataset data=[data/reacher,data/point_maze] rae=runs/rae_both   # each dataset, one RAE

The library is pretrain.data.latent_cache (file layout, checksums, fingerprints, skipping).
"""
from __future__ import annotations

from lw.program import Program
from pretrain.data.latent_cache import EncodeDatasetConfig, encode_dataset

main = Program(__doc__, EncodeDatasetConfig, "encode_dataset", encode_dataset)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.encode_dataset")
