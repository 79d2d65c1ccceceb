"""Which tasks a model folder covers and each task's action units: the one answer the world model,
the JEPA, the env, the benchmark and the evaluators read (worldmodel.world re-exports it)."""
from __future__ import annotations

from typing import Any

from .errors import ConfigError


def covered_tasks(extras: dict[str, Any]) -> dict[str, dict | None]:
    """The tasks a world-model folder covers, each with the data policy its data was collected with
    (None: not recorded): the one answer the env, the benchmark and the evaluators read.

    `extras` is the folder's config.json fields (or `LatentWorld.extras`). A model trained on
    several tasks lists `tasks` and maps each to its policy in `data_policy`; a single-task model
    has one `task` and one `data_policy`; a folder naming no task covers none ({}).
    """
    if extras.get("tasks"):
        policies = extras.get("data_policy") or {}
        return {str(t): policies.get(t) for t in extras["tasks"]}
    if extras.get("task"):
        return {str(extras["task"]): extras.get("data_policy")}
    return {}


def select_task(extras: dict[str, Any], task: str | None = None) -> str:
    """The ground-truth task to run a world model on: `task`, or (None) the model's only task.
    A model of several tasks refuses a task it was not trained on, and needs one to be named."""
    covered = list(covered_tasks(extras))
    if task:
        if len(covered) > 1 and task not in covered:
            raise ConfigError(f"task={task!r}, but this world model was trained on the tasks {covered}; "
                             f"expected one of them")
        return str(task)
    if len(covered) == 1:
        return covered[0]
    if covered:
        raise ConfigError(f"this world model was trained on several tasks, {covered}; pass task=<one of them>")
    raise ConfigError("task=None and the model folder names no task; pass task=<name> "
                     "(e.g. 'reacher') to choose the ground-truth task")


def task_index(extras: dict[str, Any], task: str) -> int:
    """`task`'s position among the tasks a model folder covers: the index its task-conditioned heads
    read (`worldmodel.jepa.JEPAConfig.task_heads`). A task it does not cover is a ConfigError."""
    covered = list(covered_tasks(extras))
    if task not in covered:
        raise ConfigError(f"task={task!r} is not one this model was trained on, {covered}; expected one of them")
    return covered.index(task)


def task_action_scale(extras: dict[str, Any], task: str, model_scale: float) -> float:
    """The action bound of `task` in a world-model folder: a model of several tasks records each task's in
    `action_scales` {task: scale}; a single-task model (or a folder without them) has its config's one,
    `model_scale`. A folder whose scales do not name `task` is a ConfigError."""
    scales = extras.get("action_scales")
    if not scales:
        return float(model_scale)
    if task not in scales:
        raise ConfigError(f"task={task!r} has no action scale in this world model's action_scales {scales}; "
                          f"expected one of {list(scales)}")
    return float(scales[task])


def model_actions(actions, task_scale: float, model_scale: float):
    """A task's actions (numpy or torch, in [-task_scale, task_scale]) in the model's units: stretched to
    [-model_scale, model_scale], so that the model's division by its `action_scale` hands every task's
    actions over as a fraction of that task's own bound. Unchanged (the same object) when the scales agree."""
    if task_scale == model_scale:
        return actions
    return actions * (model_scale / task_scale)
