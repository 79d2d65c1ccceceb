"""The trainer of `lw pretrain` (lw/pretrain.py): the unified Transfusion MoE model on the data mixture.

    lw pretrain experiment=tiny_cpu                      # ~10 min on 2 CPU cores
    lw pretrain experiment=tiny_cpu resume=true          # continue a killed run exactly
    lw pretrain experiment=tiny_cpu resume=auto          # continue if run_dir has a checkpoint, else start
    torchrun --nproc_per_node=8 -m lw.pretrain model=base data.seq_len=2048

One code path for one process and many: under torchrun the model is sharded with FSDP2
(`pretrain.distributed.parallelize`) and checkpoints go through DCP. Every rank draws the
same global batch from the mixture and trains on its own slice, and the flow noise of
each micro-batch comes from a generator seeded by (seed, step, global micro-batch index):
N ranks x k micro-batches see exactly the data and noise of 1 rank x N*k micro-batches.

Run folder: config.yaml/json (resolved), metrics.jsonl, tb/, checkpoints/step-XXXXXXXX/,
model/ (the export: Transfusion + its RAE in model/rae/, loadable by from_pretrained).
"""
from __future__ import annotations

import dataclasses
import math
import queue
import random
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pretrain import checkpoint as ckpt
from pretrain import distributed as dist_mod
from pretrain.checkpoint import CheckpointConfig
from pretrain.data.mixture import SOURCE_NAMES, DataConfig, EpisodeData, Mixture, load_mixture_episodes
from pretrain.eval_prediction import recorded_data_policy
from pretrain.metrics import (MetricsConfig, MetricsLogger, Throughput, bar_postfix, flops_per_token, mfu,
                              peak_flops, progress_bar, save_resolved, truncate_jsonl)
from pretrain.optim import EMA, OptimConfig, build_optimizer, build_scheduler
from worldmodel.config import ModelConfig
from worldmodel.device import set_threads
from worldmodel.errors import ConfigError
from worldmodel.sequence import TEXT, collate, document_length, pack_rows

PRECISIONS = ("auto", "bf16", "fp32")
GROUPS = ("group/text", "group/frames", "group/action_video")  # loss groups shown on the progress bar
SWITCHES = ("auto", "on", "off")
RESUMES = ("false", "true", "auto")


@dataclass
class RAEArgs:
    path: str = "runs/rae_reacher"  # RAE folder (save_pretrained): sets the latent grid/dim, copied into the export


@dataclass
class TrainConfig:
    run_dir: str = "runs/pretrain"  # output folder (config, metrics, checkpoints, model/)
    seed: int = 0                   # model init, flow noise; the data order has data.seed
    device: str = "auto"            # auto | cpu | cuda | cuda:N ("auto": CUDA when available)
    threads: int = 0                # torch CPU threads; 0 = torch's default (OMP_NUM_THREADS). On shared
                                    # cores, more threads than free cores slows training down many-fold
    steps: int = 1000               # optimizer steps of the whole run (the LR schedule spans them)
    max_steps_this_run: int = 0     # stop this invocation after this many steps (0 = run to `steps`)
    batch_size: int = 8             # packed rows per optimizer step (global: all ranks x micro-batches)
    grad_accum: int = 1             # micro-batches per rank per optimizer step
    resume: str = "false"           # false: a new run (refused if run_dir holds checkpoints) | true: continue
                                    # the newest checkpoint in run_dir/checkpoints (refused if there is none)
                                    # | auto: continue if there is one, else start at step 0 (and say so)
    precision: str = "auto"         # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    compile: str = "auto"           # torch.compile the transformer blocks: auto (CUDA only) | on | off (or true/false)
    prefetch: int = -1              # steps of batches built ahead in a thread; -1 = auto (2 on CUDA, 0 on CPU)
    eval_every: int = 0             # steps between held-out evaluations (0 = only at the end)
    eval_rows: int = 16             # held-out rows per evaluation
    export: bool = True             # write run_dir/model/ at the end of the run
    init_from: str = ""             # fine-tune: start a new run from this model folder's weights (lw pretrain's
                                    # model/ or a packed checkpoint; same architecture), not a fresh init. The
                                    # optimiser, schedule and data order start anew; resume=true ignores it
    model: ModelConfig = field(default_factory=ModelConfig)    # latent_dim/frame_grid/action_* come from the RAE/data
    rae: RAEArgs = field(default_factory=RAEArgs)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def __post_init__(self) -> None:  # the CLI's true/false arrive as bools or 'True'/'False': one spelling each
        self.resume = resume_mode(self.resume)
        self.compile = switch(self.compile, "compile")


# ---------------------------------------------------------------- data and model shapes
@dataclass
class DataInfo:
    """What the model and the export need to know about the data and the RAE."""
    latent_dim: int | None = None
    frame_grid: tuple[int, int] | None = None
    encoder_id: str = ""
    action_dim: int | None = None
    action_scale: float | None = None                # the model's: the largest of action_scales
    action_scales: dict[str, float] = field(default_factory=dict)  # each task's action bound (its actions / it)
    tasks: list[str] = field(default_factory=list)   # the task of each dataset, in data.dataset order
    image_size: int | None = None


def uses_episodes(data: DataConfig) -> bool:
    return any(w > 0 for k, w in data.weights().items() if k != TEXT)


def resolve_data_info(cfg: TrainConfig) -> DataInfo:
    """Latent shape from the RAE folder, action shape/scale and task from the dataset manifest."""
    from worldmodel import hub
    info = DataInfo()
    if cfg.rae.path:
        meta = hub.read_config(cfg.rae.path, "rae")
        info.latent_dim, info.frame_grid = int(meta["latent_dim"]), tuple(int(g) for g in meta["grid"])
        info.encoder_id = str(meta["encoder_id"])
        info.image_size = int(meta["config"]["image_size"])
    elif uses_episodes(cfg.data):
        raise ConfigError("rae.path is empty but the data mixture has vision sources; "
                          "expected the RAE folder whose latents the dataset caches")
    if uses_episodes(cfg.data):
        from pretrain.data.datasets import action_scales, open_datasets
        datasets = open_datasets(cfg.data.roots())   # one frame size and action dim, else a DataError
        info.tasks, info.action_dim = [ds.task for ds in datasets], int(datasets[0].action_dim)
        info.action_scales, info.action_scale = action_scales(datasets)   # as load_mixture_episodes scales them
        size = datasets[0].image_size
        if info.image_size is not None and size not in (None, info.image_size):
            print(f"note: dataset frames are {size}px, the RAE works at {info.image_size}px", file=sys.stderr)
    return info


def model_config(cfg: TrainConfig, info: DataInfo) -> ModelConfig:
    """cfg.model with the data-determined fields filled in."""
    over: dict[str, Any] = {}
    if info.latent_dim is not None:
        over.update(latent_dim=info.latent_dim, frame_grid=info.frame_grid)
    if info.action_dim is not None:
        over.update(action_dim=info.action_dim, action_scale=info.action_scale)
    if cfg.data.max_jump > 1 and cfg.model.action_encoding == "embed":
        for key in ("direct_action", "action_adaln"):
            if getattr(cfg.model, key):
                raise ConfigError(f"data.max_jump={cfg.data.max_jump} puts several actions before a frame, but "
                                  f"model.{key}=true feeds one action per frame; set model.{key}=false")
    need = cfg.data.seq_len
    if cfg.model.max_seq_len < need:
        over["max_seq_len"] = need
    return dataclasses.replace(cfg.model, **over)


def switch(value: str | bool, name: str) -> str:
    """'auto' | 'on' | 'off' (YAML/CLI may hand over true/false, which OmegaConf makes 'True'/'False')."""
    v = str(value).strip().lower()
    v = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(v, v)
    if v not in SWITCHES:
        raise ConfigError(f"{name}={value!r}, expected one of {SWITCHES}")
    return v


def resume_mode(value: str | bool) -> str:
    """'false' | 'true' | 'auto' (the CLI's resume=true arrives as the bool True or the string 'True')."""
    v = str(value).strip().lower()
    v = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(v, v)
    if v not in RESUMES:
        raise ConfigError(f"resume={value!r}, expected one of {RESUMES}")
    return v


def resume_checkpoint(cfg: TrainConfig) -> Path | None:
    """The checkpoint this run continues from (None: start at step 0), by `cfg.resume`.

    resume=true with nothing to continue is refused: a mistyped or empty run_dir would
    otherwise silently train from scratch. resume=auto accepts that case; resume=false
    refuses a run_dir that already holds checkpoints (it would mix two runs)."""
    root = Path(cfg.run_dir) / "checkpoints"
    last = ckpt.latest(root)
    mode = resume_mode(cfg.resume)
    if mode == "false" and last is not None:
        raise ConfigError(f"{str(root)!r} already holds checkpoints; pass resume=true to continue "
                          f"that run, or choose another run_dir")
    if mode == "true" and last is None:
        where = (f"run_dir {cfg.run_dir!r} does not exist" if not Path(cfg.run_dir).exists()
                 else f"{str(root)!r} holds no checkpoint")
        raise ConfigError(f"resume=true, but {where}: there is no run to continue (is run_dir mistyped?). "
                          f"Pass resume=auto to continue when there is a checkpoint and start at step 0 "
                          f"otherwise, or resume=false to start a new run")
    return None if mode == "false" else last


def check_config(cfg: TrainConfig, world_size: int) -> int:
    """Check the config (it is left as it is) and the step arithmetic; returns rows per micro-batch
    per rank. TrainConfig spells `resume` and `compile` one way when it is built (__post_init__);
    a value set on it later is checked here, and read through resume_mode/switch where it is used."""
    resume_mode(cfg.resume)
    switch(cfg.compile, "compile")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision={cfg.precision!r}, expected one of {PRECISIONS}")
    if cfg.steps < 1 or cfg.grad_accum < 1 or cfg.batch_size < 1:
        raise ConfigError(f"steps={cfg.steps}, grad_accum={cfg.grad_accum}, batch_size={cfg.batch_size}; "
                          f"expected all >= 1")
    per = world_size * cfg.grad_accum
    if cfg.batch_size % per:
        raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by world_size*grad_accum={per}; "
                          f"expected a multiple of {per}")
    return cfg.batch_size // per


# ---------------------------------------------------------------- the trainer
def _micro_seed(seed: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + micro) % (2**63)


def _combine(metric_list: list[dict[str, float]]) -> dict[str, float]:
    """Average per-micro-batch metrics; a per-source metric over the micro-batches that had it."""
    out: dict[str, list[float]] = {}
    for m in metric_list:
        for k, v in m.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in out.items()}


def _bar_losses(m: dict[str, float]) -> dict[str, float]:
    """Loss groups of the progress bar: text (text source), frames (image-text + video flow),
    action-video (flow)."""
    out = {}
    if "loss_text/text" in m:
        out["group/text"] = m["loss_text/text"]
    frames = [m[k] for k in ("loss_flow/image_text", "loss_flow/video") if k in m]
    if frames:
        out["group/frames"] = sum(frames) / len(frames)
    if "loss_flow/action_video" in m:
        out["group/action_video"] = m["loss_flow/action_video"]
    return out


class Prefetcher:
    """Builds the next steps' micro-batches in a background thread (host packing overlaps the
    device step). Each item carries the mixture position *after* it, so a checkpoint saves
    the position of the last consumed step and resuming is exact whatever was prefetched."""

    def __init__(self, build, mixture: Mixture, depth: int):
        self.build, self.mixture = build, mixture
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True, name="prefetch")
        self.thread.start()

    def _work(self) -> None:
        try:
            while not self.stop.is_set():
                item = (self.build(), self.mixture.state_dict())
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced in the training thread
            self.queue.put((e, None))

    def next(self) -> tuple[list, dict]:
        batches, state = self.queue.get()
        if isinstance(batches, BaseException):
            raise RuntimeError("building a training batch failed") from batches
        return batches, state

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def init_weights_from(model: nn.Module, path: str | Path, kind: str = "", program: str = "lw pretrain") -> str:
    """Fine-tuning: copy the weights of a model folder of `kind` (default: a Transfusion's, written by
    `program`) into a freshly built `model`.

    Every parameter and buffer must exist in both with the same shape (the same architecture);
    anything else is refused, naming the differences. Config fields that leave the shapes alone
    (dropout, loss weights, flow shift, ...) are this run's. Returns a line for the log."""
    from worldmodel import hub
    from worldmodel.transfusion import KIND

    hub.read_config(path, kind or KIND)             # a clear error for a folder of another kind
    theirs = hub.load_state_dict(path)
    mine = model.state_dict()
    differences = {
        "missing there": sorted(set(mine) - set(theirs)),
        "not in this model": sorted(set(theirs) - set(mine)),
        "other shapes": [f"{k} {tuple(theirs[k].shape)} vs {tuple(mine[k].shape)}" for k in sorted(set(mine) & set(theirs))
                         if theirs[k].shape != mine[k].shape]}
    problems = [f"{what}: {', '.join(keys[:4])}" + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                for what, keys in differences.items() if keys]
    if problems:
        raise ConfigError(f"init_from={str(path)!r} is another architecture than this run's model: "
                          + "; ".join(problems) + f". Expected a folder written by `{program}` with the same model config")
    model.load_state_dict(theirs, strict=True)      # copies into this model's dtype and device
    return f"init_from: {len(theirs)} tensors from {str(path)!r} (fine-tuning; optimiser and schedule start at step 0)"


def task_extras(data: DataConfig, tasks: list[str], action_scales: dict[str, float]) -> dict[str, Any]:
    """The export's tasks, their data policies and action scales (read back by worldmodel.world.covered_tasks
    and task_action_scale): one task as `task` + its `data_policy` (a single-task model, as ever: its action
    scale is the model config's); several as `tasks` + `data_policy` {task: policy} + `action_scales`
    {task: bound}. A data policy is the one its datasets were collected with (the benchmark's anchors'
    goals are states it reached); None where there is no record or the task's datasets disagree."""
    policies: dict[str, dict | None] = {}
    for root, task in zip(data.roots() if tasks else [], tasks):
        policy = recorded_data_policy(root)
        policies[task] = policy if policies.get(task, policy) == policy else None
    if len(policies) > 1:
        return {"tasks": list(policies), "data_policy": policies,
                "action_scales": {t: action_scales[t] for t in policies}}
    task = next(iter(policies), "")   # "" for a model without episode data
    return {"task": task, "data_policy": policies.get(task)}


class Trainer:
    """Builds data, model, optimiser from a TrainConfig and runs optimizer steps.

    `episodes` / `val_episodes` (optional) replace the dataset's cached latents (synthetic data
    for benchmarks, or episodes a sweep loaded once); `info` then describes their shapes.
    """

    def __init__(self, cfg: TrainConfig, episodes: list[EpisodeData] | None = None,
                 info: DataInfo | None = None, dist: dist_mod.DistInfo | None = None, quiet: bool = False,
                 val_episodes: list[EpisodeData] | None = None):
        self.cfg = cfg
        set_threads(cfg.threads)
        self.dist = dist or dist_mod.init_distributed(cfg.device)
        self.device = self.dist.device
        self.micro_rows = check_config(cfg, self.dist.world_size)
        self.quiet = quiet or not self.dist.is_main
        self.run_dir = Path(cfg.run_dir)
        self._resume_from = resume_checkpoint(cfg)  # decided (or refused) before any data or model is built
        self.info = info or resolve_data_info(cfg)
        self.model_cfg = model_config(cfg, self.info)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

        # data: every rank builds the same mixture and takes its slice of each global batch
        self._val_encoder = ""   # the dataset's val split is loaded with this encoder's latents on first use
        if episodes is None and uses_episodes(cfg.data):
            enc = cfg.data.encoder_id or self.info.encoder_id
            episodes = load_mixture_episodes(cfg.data, enc, "train")
            val_episodes = None
            if cfg.data.holdout > 0:
                self._val_encoder = enc
        self._train_episodes, self._val_episodes = episodes, val_episodes
        self.mixture = Mixture(cfg.data, self.document_length, episodes, split="train")

        # model
        from worldmodel.transfusion import Transfusion
        self.model = Transfusion.build(self.model_cfg, self.device)  # meta-device build + explicit init
        self.init_note = ""
        if cfg.init_from and self._resume_from is None:   # a resumed run's checkpoint holds the fine-tuned weights
            self.init_note = init_weights_from(self.model, cfg.init_from)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        emb = sum(m.weight.numel() for m in self.model.modules() if isinstance(m, nn.Embedding))
        self.n_active = self.model.num_active_params() - emb  # matmul parameters a token uses
        self.flops_per_token = flops_per_token(self.n_active, self.model_cfg.n_layers, self.model_cfg.d_model,
                                               cfg.data.seq_len)
        if self.dist.world_size > 1:
            dist_mod.parallelize(self.model, self.dist.mesh)
        compile_mode = switch(cfg.compile, "compile")
        if compile_mode == "on" or (compile_mode == "auto" and self.device.type == "cuda"):
            for block in dist_mod.blocks(self.model):
                block.compile()
        self.amp = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.steps)
        self.ema = EMA(self.model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        self.step = 0
        self.tokens_seen = 0
        self.peak = peak_flops(self.device, cfg.metrics.peak_flops)
        self.throughput = Throughput()
        self.history: list[dict[str, float]] = []
        self._prefetcher: Prefetcher | None = None
        self._data_state: dict | None = None

    # -- data
    def document_length(self, doc) -> int:
        """Tokens of a document in this model's packing (the mixture packs rows by it)."""
        return document_length(doc, self.model_cfg)

    def val_episodes(self) -> list[EpisodeData] | None:
        """The episodes evaluate() draws held-out rows from: the dataset's val split (loaded once, at
        the first evaluation) when the trainer loaded the dataset itself with a holdout; else the
        `val_episodes` given; else the training episodes."""
        if self._val_episodes is None and self._val_encoder:
            self._val_episodes = load_mixture_episodes(self.cfg.data, self._val_encoder, "val")
        return self._val_episodes if self._val_episodes is not None else self._train_episodes

    # -- state
    def train_state(self) -> dict[str, Any]:
        data = self._data_state if self._prefetcher is not None else self.mixture.state_dict()
        return {"step": self.step, "tokens_seen": self.tokens_seen, "scheduler": self.scheduler.state_dict(),
                "data": data}

    def save_checkpoint(self) -> Path:
        return ckpt.save(self.run_dir / "checkpoints", self.step, self.model, self.optimizer, self.train_state(),
                         ema=self.ema.state_dict() if self.ema else None, keep_last=self.cfg.checkpoint.keep_last)

    def load_checkpoint(self, path: str | Path) -> None:
        state = ckpt.load(path, self.model, self.optimizer, ema=self.ema.state_dict() if self.ema else None)
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.scheduler.load_state_dict(state["scheduler"])
        if self._prefetcher is not None:
            raise RuntimeError("load_checkpoint after training started; load before the first step")
        self.mixture.load_state_dict(state["data"])

    # -- one optimizer step
    def _micro_batches(self) -> list:
        rows = self.mixture.next_rows(self.cfg.batch_size)  # the global batch, identical on every rank
        r, m = self.dist.rank, self.micro_rows
        mine = rows[r * self.cfg.grad_accum * m:(r + 1) * self.cfg.grad_accum * m]
        seq_len = self.cfg.data.seq_len
        out = [collate([pack_rows(docs, seq_len, self.model_cfg) for docs in mine[i * m:(i + 1) * m]])
               for i in range(self.cfg.grad_accum)]
        return [b.pin_memory() for b in out] if self.device.type == "cuda" else out

    def _next_batches(self) -> list:
        depth = self.cfg.prefetch if self.cfg.prefetch >= 0 else (2 if self.device.type == "cuda" else 0)
        if depth == 0:
            return self._micro_batches()
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(self._micro_batches, self.mixture, depth)
        batches, self._data_state = self._prefetcher.next()
        return batches

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()

    def train_step(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        batches = self._next_batches()
        metric_list = []
        for i, batch in enumerate(batches):
            batch = batch.to(self.device, non_blocking=True)
            micro = self.dist.rank * cfg.grad_accum + i  # global micro-batch index: independent of world size
            gen = torch.Generator(device=self.device).manual_seed(_micro_seed(cfg.seed, self.step, micro))
            if self.dist.world_size > 1 and hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(i == len(batches) - 1)  # reduce-scatter once per step
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss, metrics = model.loss(batch, generator=gen)
            (loss / cfg.grad_accum).backward()
            metric_list.append(metrics)
        if cfg.optim.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        else:
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        from worldmodel.moe import update_load_balance_bias
        update_load_balance_bias(model)
        if self.ema is not None:
            self.ema.update(model)
        self.step += 1
        tokens = cfg.batch_size * cfg.data.seq_len
        self.tokens_seen += tokens
        m = dist_mod.all_reduce_mean(_combine(metric_list), self.device)
        m.update(_bar_losses(m))
        m.update(lr=lr, grad_norm=float(dist_mod.full_tensor(gnorm)), tokens=self.tokens_seen)
        tok_s = self.throughput.update(tokens)
        if tok_s > 0:
            m["tok_s"] = tok_s
            if (u := mfu(tok_s, self.flops_per_token, self.peak, self.dist.world_size)) is not None:
                m["mfu"] = u
        return m

    @torch.no_grad()
    def evaluate(self, rows: int | None = None) -> dict[str, float]:
        """Mean loss on held-out rows (fixed: the same rows at every evaluation)."""
        cfg = self.cfg
        rows = rows or cfg.eval_rows
        split = "val" if cfg.data.holdout > 0 else "train"  # no held-out split: fresh draws of train data
        mix = Mixture(dataclasses.replace(cfg.data, seed=cfg.data.seed + 1), self.document_length,
                      self.val_episodes(), split=split)
        docs = mix.next_rows(rows)
        was = self.model.training
        self.model.eval()
        out = []
        for i in range(0, rows, self.micro_rows):
            batch = collate([pack_rows(d, cfg.data.seq_len, self.model_cfg) for d in docs[i:i + self.micro_rows]])
            gen = torch.Generator(device=self.device).manual_seed(_micro_seed(cfg.seed + 1, 0, i))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                _, metrics = self.model.loss(batch.to(self.device), generator=gen)
            out.append(metrics)
        self.model.train(was)
        m = _combine(out)
        m.update(_bar_losses(m))
        return {f"val/{k}": v for k, v in m.items() if k.startswith(("loss", "group/"))}

    # -- the run
    def describe(self) -> str:
        c, mc = self.cfg, self.model_cfg
        labels = "" if c.data.labelled == 1 else (
            f"; actions of {c.data.labelled:.0%} of the training episodes, the other sources on "
            f"{'all of them' if c.data.unlabelled_video else 'those alone'}")
        return (f"pretrain: {self.n_params / 1e6:.2f}M params ({self.n_active / 1e6:.2f}M active, non-embedding), "
                f"d={mc.d_model} L={mc.n_layers} ffn={mc.moe.kind}"
                f"{f' E={mc.moe.n_experts} k={mc.moe.top_k}' if mc.moe.kind == 'moe' else ''}, "
                f"latents {mc.frame_grid}x{mc.latent_dim}, actions {mc.action_dim}d/{mc.action_encoding}\n"
                f"  {c.steps} steps x {c.batch_size} rows x {c.data.seq_len} tokens = "
                f"{c.batch_size * c.data.seq_len} tokens/step on {self.dist.world_size}x {self.device}"
                f"{f' ({torch.get_num_threads()} threads)' if self.device.type == 'cpu' else ''} "
                f"({'bf16' if self.amp else 'fp32'}), {self.flops_per_token / 1e6:.2f} MFLOP/token; mixture "
                + ", ".join(f"{SOURCE_NAMES[k]} {w:.1%}" for k, w in c.data.weights().items()) + labels)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        ckpt_root = self.run_dir / "checkpoints"
        resumed_from = None
        if self._resume_from is not None:
            self.load_checkpoint(self._resume_from)
            resumed_from = self.step
        elif resume_mode(cfg.resume) == "auto" and not self.quiet:
            print(f"resume=auto: no checkpoint in {str(ckpt_root)!r}; starting a new run at step 0", flush=True)
        logger = None
        if self.dist.is_main:
            save_resolved(cfg, self.run_dir)
            if resumed_from is not None:
                truncate_jsonl(self.run_dir / "metrics.jsonl", resumed_from)
            logger = MetricsLogger(self.run_dir, cfg.metrics.tensorboard, append=resumed_from is not None)
            if not self.quiet:
                print(self.describe() + (f"\n  resuming at step {self.step}" if resumed_from is not None else "")
                      + (f"\n  {self.init_note}" if self.init_note else ""),
                      flush=True)
        start = self.step
        end = cfg.steps if cfg.max_steps_this_run <= 0 else min(cfg.steps, self.step + cfg.max_steps_this_run)
        bar = progress_bar(cfg.steps, "pretrain", enabled=cfg.metrics.progress and not self.quiet, initial=self.step)
        try:
            while self.step < end:
                m = self.train_step()
                if not all(math.isfinite(m.get(k, 0.0)) for k in ("loss", "grad_norm")):
                    raise FloatingPointError(f"non-finite loss {m.get('loss')} / grad norm {m.get('grad_norm')} "
                                             f"at step {self.step}")
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    m.update(self.evaluate())
                self.history.append(m)
                if logger is not None and (self.step % cfg.metrics.log_every == 0 or self.step == end):
                    logger.log(self.step, m)
                bar.set_postfix(bar_postfix(m), refresh=False)
                bar.update(1)
                if cfg.checkpoint.every > 0 and self.step % cfg.checkpoint.every == 0 and self.step < end:
                    self.save_checkpoint()
            final: dict[str, float] = {}
            if self.step >= cfg.steps and cfg.eval_rows > 0:
                final = self.evaluate()
                if logger is not None:
                    logger.log(self.step, final)
            if self.step > start and cfg.checkpoint.every >= 0:  # leave a checkpoint to resume from
                self.save_checkpoint()
            exported = None
            if self.step >= cfg.steps and cfg.export:
                exported = self.export(self.run_dir / "model")
        finally:
            self.close()
            bar.close()
            if logger is not None:
                logger.close()
        return {"step": self.step, "history": self.history, "final_eval": final, "export": exported,
                "run_dir": str(self.run_dir), "n_params": self.n_params, "n_active": self.n_active,
                "flops_per_token": self.flops_per_token}

    # -- export
    def export_extra(self) -> dict[str, Any]:
        i = self.info
        # the simulator's defaults (worldmodel.world.EXTRA_KEYS; a single task's action scale is config.action_scale)
        d = self.cfg.data
        # window: the longest history an action-video target had in training; a rollout conditions each
        # imagined frame on no more than that (docs/EXPERIMENTS.md entry 38)
        return {"image_size": i.image_size, "context_frames": d.context_frames,
                "window": d.context_frames + d.predict_frames - 1,
                "sample_steps": self.model_cfg.flow.sample_steps, "max_jump": d.max_jump,
                "encoder_id": i.encoder_id, "dataset": d.dataset, "seq_len": d.seq_len, "train_steps": self.step,
                "train_tokens": self.tokens_seen, "ema": self.ema is not None, "init_from": self.cfg.init_from,
                **task_extras(d, i.tasks, i.action_scales)}

    def export(self, path: str | Path) -> Path | None:
        """run_dir/model: the (EMA) weights as a from_pretrained folder, plus the RAE in model/rae/."""
        from worldmodel.transfusion import Transfusion
        sd = dist_mod.full_state_dict(self.model)  # collective under FSDP
        if self.ema is not None:
            for k, v in self.ema.state_dict().items():
                full = dist_mod.full_tensor(v).detach().cpu()
                if self.dist.is_main:
                    sd[k] = full
        path = Path(path)
        if self.dist.is_main:
            tmp = path.with_name(f".{path.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model = Transfusion(self.model_cfg)
            model.load_state_dict(sd, strict=True)
            model.save_pretrained(tmp, extra=self.export_extra())
            if self.cfg.rae.path:
                shutil.copytree(self.cfg.rae.path, tmp / "rae")
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        dist_mod.barrier()
        return path


def train(cfg: TrainConfig, **kw) -> dict[str, Any]:
    trainer = Trainer(cfg, **kw)
    return trainer.run()
