"""`lw train-rae`: train the RAE pixel decoder on a frozen representation encoder.

    lw train-rae data=data/reacher encoder=own encoder_weights=runs/mae_reacher out=runs/rae_reacher
    lw train-rae encoder=timm:vit_small_patch14_dinov2 encoder_weights=/path/model.safetensors ...

The library is pretrain.train_rae (what is cached, the losses, the held-out scores).
"""
from __future__ import annotations

from lw.program import Program
from pretrain.train_rae import TrainRAEConfig, train

main = Program(__doc__, TrainRAEConfig, "train_rae", train)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.train_rae")
