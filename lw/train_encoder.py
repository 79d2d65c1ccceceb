"""`lw train-encoder`: pretrain the offline ('own') ViT encoder with masked autoencoding
(`method=mae`, pretrain.train_encoder) or a representation for control (`method=jepa`,
pretrain.train_jepa).

    lw train-encoder data=data/reacher out=runs/mae_reacher max_minutes=5
    lw train-encoder method=jepa data=data/reacher out=runs/jepa_reacher max_minutes=20
"""
from __future__ import annotations

from lw.program import ByKey, Program
from pretrain import train_encoder, train_jepa

main = ByKey("method", "mae", {
    "mae": Program(__doc__, train_encoder.TrainEncoderConfig, "train_encoder", train_encoder.train),
    "jepa": Program(train_jepa.__doc__, train_jepa.TrainJEPAConfig, "train_encoder_jepa", train_jepa.train),
}, error="'mae' (masked autoencoder) or 'jepa' (predictive, for control)")

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.train_encoder")
