"""`lw collect`: roll out data policies in the ground-truth MuJoCo tasks and write shards.

    lw collect task=reacher episodes=300 policy=mixture workers=2 out=data/reacher seed=0

The library is pretrain.data.collect (seeds, workers, Ctrl-C keeping a valid dataset).
"""
from __future__ import annotations

from lw.program import Program
from pretrain.data.collect import CollectConfig, collect
from pretrain.data.shards import dataset_summary


def run(cfg: CollectConfig) -> int:
    try:
        print(collect(cfg))
    except KeyboardInterrupt:
        try:
            print(dataset_summary(cfg.out))
        except (FileNotFoundError, ValueError):
            pass
        return 130
    return 0


main = Program(__doc__, CollectConfig, "collect", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.collect")
