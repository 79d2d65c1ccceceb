"""`lw demo`: the whole chain on one task, ending in one table and a report folder.

    lw demo                      # the embedded checkpoint: evaluate, plan, report (minutes)
    lw demo from_scratch=true    # collect -> encoder -> RAE -> latents -> pretrain -> evaluate -> plan -> report
    lw demo from_scratch=true scale=gpu_small device=cuda   # the same chain at GPU scale

Each stage is an ordinary `lw` command (printed before it runs, so any stage can be re-run
by hand). A finished stage leaves a marker with its exact command in its output folder;
re-running the demo reuses it (and says so) unless `restart=true`.

The report folder (`out`) holds: summary.md / summary.json (the printed table),
loss_curves.png, imagine.gif (MuJoCo | imagined, same actions), plan.gif (a plan of the
learned model executed in MuJoCo), and the stage outputs prediction/ and benchmark/.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lw import benchmark, collect, encode_dataset, eval_prediction, report, train_encoder, train_rae
from lw import pretrain as pretrain_command
from lw.program import Program, exit_code
from pretrain.metrics import save_resolved
from worldmodel.errors import UserError

EMBEDDED_MODEL = "checkpoints/reacher-tiny"   # shipped with the repository (see its RECIPE.md)
MARKER = ".lw-stage.json"
# the commands the stages run, each through its module's runner (as `lw <command>` runs it)
STAGE_COMMANDS = {"collect": collect.main, "train-encoder": train_encoder.main, "train-rae": train_rae.main,
                  "encode-dataset": encode_dataset.main, "pretrain": pretrain_command.main,
                  "eval-prediction": eval_prediction.main, "benchmark": benchmark.main}


@dataclass
class ScratchArgs:
    episodes: int = 600             # reacher episodes to collect (50 decisions each)
    encoder: str = "jepa"           # representation: jepa (trained for control, the default) | mae
    encoder_minutes: float = 5.0    # encoder training budget
    rae_minutes: float = 4.0        # RAE decoder training budget
    experiment: str = "tiny_cpu"    # `lw pretrain experiment=...` preset (GPU: a larger preset)
    pretrain_overrides: list[str] = field(default_factory=list)  # extra `lw pretrain` overrides


@dataclass
class DemoConfig:
    task: str = "reacher"           # ground-truth task (the embedded model is a reacher model)
    from_scratch: bool = False      # run the whole chain instead of using the embedded model
    model: str = EMBEDDED_MODEL     # world-model folder used when from_scratch=false
    work_dir: str = "runs/demo"     # stage outputs (from-scratch data, encoder, RAE, pretrain run)
    out: str = "reports/demo"       # report folder
    restart: bool = False           # redo finished stages instead of reusing them
    device: str = ""                # "" = cuda if available, else cpu
    scratch: ScratchArgs = field(default_factory=ScratchArgs)
    eval_episodes: int = 8          # held-out episodes for prediction quality
    horizon: int = 10               # open-loop imagined steps scored
    sample_steps: int | None = None  # Euler steps per imagined frame (prediction, planning, GIF); None = the
                                     # model's own default (1 for the CPU presets; 25 costs ~6x the time)
    bench_episodes: int = 8         # planning episodes per row (fixed held-out seeds)
    bench_rows: list[str] = field(default_factory=lambda: ["learned", "jepa", "oracle_latent", "oracle_state", "random"])
    max_steps: int = 50             # decision steps per planning episode
    bench_overrides: list[str] = field(default_factory=list)  # extra `lw benchmark` overrides


class StageFailed(UserError, RuntimeError):
    """A stage returned a non-zero exit code; it has printed why (the demo stops there)."""


class Stages:
    """Runs `lw` commands as numbered stages, reusing the ones that already finished."""

    def __init__(self, names: list[str], restart: bool):
        self.names, self.restart, self.i = names, restart, 0
        self.seconds: dict[str, float] = {}

    def run(self, name: str, argv: list[str], out_dir: str | Path) -> None:
        self.i += 1
        out_dir = Path(out_dir)
        marker = out_dir / MARKER
        tag = f"[{self.i}/{len(self.names)}] {name}"
        if marker.is_file() and not self.restart and json.loads(marker.read_text()).get("argv") == argv:
            print(f"{tag}: reusing finished stage in {out_dir} (restart=true redoes it)", flush=True)
            self.seconds[name] = 0.0
            return
        if out_dir.exists() and self.restart:
            shutil.rmtree(out_dir)
        print(f"{tag}: lw {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        rc = exit_code(argv[0], STAGE_COMMANDS[argv[0]], argv[1:])
        if rc:
            raise StageFailed(f"demo stage {name!r} failed (exit code {rc}): lw {' '.join(argv)}")
        self.seconds[name] = time.perf_counter() - t0
        out_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"argv": argv, "seconds": self.seconds[name]}, indent=2))
        print(f"{tag}: done in {self.seconds[name]:.0f} s", flush=True)


def scratch_chain(cfg: DemoConfig, st: Stages) -> str:
    """collect -> encoder -> RAE -> latent cache -> pretrain; returns the exported model folder."""
    w, s = Path(cfg.work_dir), cfg.scratch
    if s.encoder not in ("jepa", "mae"):
        raise UserError(f"scratch.encoder={s.encoder!r}, expected 'jepa' or 'mae'")
    data, enc, rae, run = w / "data" / cfg.task, w / s.encoder, w / "rae", w / "pretrain"
    dev = [f"device={cfg.device}"] if cfg.device else []
    st.run("collect", ["collect", f"task={cfg.task}", f"episodes={s.episodes}", f"out={data}",
                       "overwrite=true"], data)
    st.run("train-encoder", ["train-encoder", f"method={s.encoder}", f"data={data}", f"out={enc}",
                             f"max_minutes={s.encoder_minutes}", *dev], enc)
    st.run("train-rae", ["train-rae", f"data={data}", f"out={rae}", f"encoder={'jepa' if s.encoder == 'jepa' else 'own'}",
                         f"encoder_weights={enc}", f"max_minutes={s.rae_minutes}", *dev], rae)
    st.run("encode-dataset", ["encode-dataset", f"data={data}", f"rae={rae}", *dev], data / "latents")
    st.run("pretrain", ["pretrain", f"experiment={s.experiment}", f"run_dir={run}", f"data.dataset={data}",
                        f"rae.path={rae}", *dev, *s.pretrain_overrides], run)
    return str(run / "model")


def run(cfg: DemoConfig) -> None:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    save_resolved(cfg, out)
    names = (["collect", "train-encoder", "train-rae", "encode-dataset", "pretrain"] if cfg.from_scratch else [])
    names += ["eval-prediction", "benchmark", "report"]
    st = Stages(names, cfg.restart)
    jepa = ""   # the jepa row's folder; "" = <model>/jepa (the embedded checkpoint ships one)
    if cfg.from_scratch:
        model = scratch_chain(cfg, st)
        jepa = str(Path(cfg.work_dir) / "jepa") if cfg.scratch.encoder == "jepa" else ""
    else:
        model = cfg.model
        from worldmodel.hub import read_config
        read_config(model, kind="transfusion")  # a clear error before any work when it is missing
    print(f"demo: task {cfg.task}, model {model}, report -> {out}", flush=True)
    dev = [f"device={cfg.device}"] if cfg.device else []
    steps = [] if cfg.sample_steps is None else [f"sample_steps={cfg.sample_steps}"]
    st.run("eval-prediction", ["eval-prediction", f"model={model}", f"task={cfg.task}",
                               f"episodes={cfg.eval_episodes}", f"horizon={cfg.horizon}", *steps,
                               f"out={out / 'prediction'}", *dev], out / "prediction")
    st.run("benchmark", ["benchmark", f"model={model}", f"tasks=[{cfg.task}]",
                         f"rows=[{','.join(cfg.bench_rows)}]", f"episodes={cfg.bench_episodes}",
                         f"max_steps={cfg.max_steps}", "rae=''", f"jepa={jepa}", "video=true", "video_episodes=1",
                         f"out={out / 'benchmark'}", *dev, *[f"learned.{s}" for s in steps], *cfg.bench_overrides],
           out / "benchmark")
    st.i += 1
    print(f"[{st.i}/{len(names)}] report: loss curves, imagined-vs-real GIF, executed-plan GIF", flush=True)
    files = report.write_report(model, cfg.task, out, seed=1_000_000, steps=cfg.horizon * 2,
                                 sample_steps=cfg.sample_steps)
    summary = report.summary_table(out / "prediction" / "prediction.json", out / "benchmark" / "results.json",
                                   model, cfg.task, time.perf_counter() - t_start)
    (out / "summary.md").write_text(summary["markdown"] + "\n")
    (out / "summary.json").write_text(json.dumps(summary["json"], indent=2))
    print("\n" + summary["markdown"])
    print(f"\nreport folder {out}: summary.md/json, " + ", ".join(str(Path(f).name) for f in files))


main = Program(__doc__, DemoConfig, "demo", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.demo")
