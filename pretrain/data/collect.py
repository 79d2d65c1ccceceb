"""`lw collect`: roll out data policies in the ground-truth MuJoCo tasks and write shards.

    lw collect task=reacher episodes=300 policy=mixture workers=2 out=data/reacher seed=0

Episode i (counted over the whole dataset, so `append=true` continues the numbering) uses
seed `seed + i` for the task reset and for the policy's noise, whichever worker runs it, so
the shards are identical for any worker count. Workers (spawn/forkserver processes, each
with its own task) return finished episodes to the parent, which writes them in order; at
most 2 episodes per worker are in flight, so memory stays bounded. Ctrl-C stops the workers,
writes the episodes already finished and leaves a valid dataset.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from envs.policies import DEFAULT_MIXTURE, POLICIES, episode_policy
from pretrain.data.shards import Episode, ShardWriter, dataset_summary
from pretrain.metrics import to_dict
from worldmodel.errors import ConfigError


@dataclass
class CollectConfig:
    task: str = "reacher"              # a key of envs.mujoco_tasks.TASKS
    episodes: int = 100                # episodes to add to the dataset
    policy: str = "mixture"            # uniform | ou | correlated | scripted | mixture
    # per-episode policy weights for policy=mixture (normalised): broad coverage + goal reaching
    mixture: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIXTURE))   # envs.policies
    hold: int = 1                      # env steps each policy decision is held (on top of the task's action_repeat)
    scripted_noise: float = 0.3        # scripted policy: Gaussian action noise, as a fraction of the action scale
    episode_steps: int | None = None   # actions per episode; None = the task's spec.episode_steps
    image_size: int = 64               # rendered frame side in pixels
    workers: int = 2                   # collection processes; 1 = in this process
    out: str = "data/${task}"          # dataset folder
    append: bool = False               # add episodes to an existing dataset at `out`
    overwrite: bool = False            # replace an existing dataset at `out`
    seed: int = 0                      # episode i uses seed + i
    episodes_per_shard: int = 32       # episodes per shard file (~40 MB at 64x64, 50 steps)
    progress: bool = True              # show a tqdm bar (frames/s)


# ----------------------------------------------------------------------------- one episode

class EpisodeCollector:
    """Owns one task instance (per process) and turns an episode index into an Episode."""

    def __init__(self, cfg: CollectConfig):
        from envs.mujoco_tasks import make_task

        self.cfg = cfg
        self.task = make_task(cfg.task, image_size=cfg.image_size, max_steps=cfg.episode_steps)
        self.steps = int(cfg.episode_steps or self.task.spec_.episode_steps)
        self.box = (self.task.action_space.low.astype(np.float32),
                    self.task.action_space.high.astype(np.float32))

    def __call__(self, index: int) -> Episode:
        cfg, task = self.cfg, self.task
        seed = cfg.seed + index
        name, policy = episode_policy(task, seed, cfg.policy, cfg.mixture, hold=cfg.hold, noise=cfg.scripted_noise)
        frame, info = task.reset(seed=seed)
        frames, states, actions, rewards = [frame], [info["state"]], [], []
        captions = [task.caption(info["state"])]
        for _ in range(self.steps):
            # the policy sees the full get_state() (an exact copy, for the scripted lookahead)
            action = np.clip(np.asarray(policy(task.get_state()), dtype=np.float32), *self.box)
            # fixed-length episodes: `terminated`/`truncated` are ignored up to `steps`
            frame, reward, _, _, info = task.step(action)
            frames.append(frame)
            states.append(info["state"])  # (qpos, qvel): spec.state_dim
            actions.append(action)
            rewards.append(reward)
            captions.append(task.caption(info["state"]))
        return Episode(frames=np.stack(frames), actions=np.stack(actions), states=np.stack(states),
                       rewards=np.asarray(rewards), goal_state=np.asarray(task.goal_state),
                       goal_frame=np.asarray(task.goal_image), captions=captions,
                       policy=name, seed=seed)


_COLLECTOR: EpisodeCollector | None = None  # one per worker process


def _init_worker(cfg: CollectConfig) -> None:
    global _COLLECTOR
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _COLLECTOR = EpisodeCollector(cfg)


def _worker_episode(index: int) -> Episode:
    return _COLLECTOR(index)


def _mp_context():
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def _validate(cfg: CollectConfig) -> None:
    from envs.mujoco_tasks import TASKS

    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task!r}, expected one of {sorted(TASKS)}")
    if cfg.policy not in (*POLICIES, "mixture"):
        raise ConfigError(f"policy={cfg.policy!r}, expected one of {[*POLICIES, 'mixture']}")
    bad = [k for k in cfg.mixture if k not in POLICIES]
    if bad or any(w < 0 for w in cfg.mixture.values()) or sum(cfg.mixture.values()) <= 0:
        raise ConfigError(f"mixture={cfg.mixture}, expected non-negative weights over {list(POLICIES)} "
                          f"with a positive sum")
    for name in ("episodes", "workers", "image_size", "hold", "episodes_per_shard"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)}, expected >= 1")
    if cfg.episode_steps is not None and cfg.episode_steps < 1:
        raise ConfigError(f"episode_steps={cfg.episode_steps}, expected >= 1 or null")


# ----------------------------------------------------------------------------- driver

def collect(cfg: CollectConfig) -> str:
    """Collect `cfg.episodes` episodes into `cfg.out`; return the dataset summary."""
    from envs.mujoco_tasks import TASKS
    from pretrain.metrics import progress_bar

    _validate(cfg)
    spec = TASKS[cfg.task]
    spec_dict = to_dict(spec) if hasattr(spec, "__dataclass_fields__") else dict(vars(spec))
    steps = int(cfg.episode_steps or spec_dict.get("episode_steps"))
    writer = ShardWriter(cfg.out, cfg.task, to_dict(cfg), task_spec=spec_dict,
                         image_size=cfg.image_size, episodes_per_shard=cfg.episodes_per_shard,
                         append=cfg.append, overwrite=cfg.overwrite)
    first = writer.n_episodes
    indices = range(first, first + cfg.episodes)
    print(f"collect: {cfg.episodes} episodes x {steps} steps of {cfg.task!r} at {cfg.image_size}px, "
          f"policy={cfg.policy}, workers={cfg.workers}, seeds {cfg.seed + first}..{cfg.seed + indices[-1]} "
          f"-> {cfg.out}", flush=True)
    bar = progress_bar(cfg.episodes * (steps + 1), f"collect {cfg.task}", cfg.progress, unit="frame", smoothing=0.1)
    pool = None
    t0 = time.perf_counter()
    try:
        with writer:
            workers = min(cfg.workers, cfg.episodes)
            if workers == 1:
                collector = EpisodeCollector(cfg)
                results = (collector(i) for i in indices)
            else:
                pool = _mp_context().Pool(workers, initializer=_init_worker, initargs=(cfg,))
                results = _ordered(pool, indices, in_flight=2 * workers)
            for ep in results:
                writer.add(ep)
                bar.update(len(ep.frames))
    except KeyboardInterrupt:
        bar.close()
        print(f"\ncollect: interrupted; kept {writer.n_episodes - first} new episodes "
              f"(the dataset at {cfg.out} is valid)", file=sys.stderr)
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    dt = time.perf_counter() - t0
    frames = cfg.episodes * (steps + 1)
    print(f"collect: {frames} frames in {dt:.1f} s ({frames / dt:.0f} frames/s, {cfg.workers} workers)")
    return dataset_summary(cfg.out)


def _ordered(pool, indices, in_flight: int):
    """Yield pool results in index order with at most `in_flight` episodes outstanding."""
    pending: deque = deque()
    it = iter(indices)
    for i in it:
        pending.append(pool.apply_async(_worker_episode, (i,)))
        if len(pending) >= in_flight:
            break
    while pending:
        result = pending.popleft()
        while not result.ready():
            result.wait(0.2)  # short waits keep Ctrl-C responsive
        ep = result.get()
        for i in it:
            pending.append(pool.apply_async(_worker_episode, (i,)))
            break
        yield ep
