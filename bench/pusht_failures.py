"""Where PushT planning fails: split a `lw benchmark` run's episodes by what the goal asks.

    .venv/bin/python bench/pusht_failures.py runs/benchmark/results.json [more results.json ...]

Under the anchors' protocol a goal either leaves the block where it is (only the pusher must
move: "block still") or moves it ("block moved"). For each row, each kind of goal and each
outcome this prints how many episodes ended with the pusher, the block pose, or both inside
DINO-WM's tolerances (20 units, pi/9), from the real simulator's final state that the
benchmark records per episode (`per_episode[i].final_state`), with the pusher's and the
block's final errors of the first few. A model whose block-moved goals fail while its
block-still goals succeed predicts the pusher but not contact.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from envs.tasks.pusht import ANCHOR_ANGLE, ANCHOR_POS, angle_error


def pose_within(state: np.ndarray, goal: np.ndarray) -> tuple[bool, bool]:
    """(pusher within ANCHOR_POS of the goal's, block within ANCHOR_POS and ANCHOR_ANGLE of the goal's)."""
    pusher = np.linalg.norm(state[:2] - goal[:2]) < ANCHOR_POS
    block = np.linalg.norm(state[2:4] - goal[2:4]) < ANCHOR_POS and angle_error(state[4], goal[4]) < ANCHOR_ANGLE
    return bool(pusher), bool(block)


def split_episodes(episodes: list[dict]) -> dict[tuple, list[tuple[int, int]]]:
    """(goal kind, success, pusher ok, block ok) -> [(pusher error, block error) at the end, ...]."""
    out: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for e in episodes:
        if "final_state" not in e:
            raise ValueError("an episode without final_state: rerun the benchmark with this version "
                             "(its per_episode records the real simulator's final state)")
        start, goal, final = (np.asarray(e[k], np.float64) for k in ("start_state", "goal_state", "final_state"))
        kind = "block moved" if not pose_within(start, goal)[1] else "block still"
        errors = (round(float(np.linalg.norm(final[:2] - goal[:2]))), round(float(np.linalg.norm(final[2:4] - goal[2:4]))))
        out[(kind, bool(e["success"]), *pose_within(final, goal))].append(errors)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results.json files written by lw benchmark on pusht")
    args = ap.parse_args()
    for path in args.results:
        for row in json.load(open(path))["results"]:
            if row["task"] != "pusht" or not row.get("per_episode"):
                continue
            print(f"{path}: {row['row']} ({row['planner']}), {row['successes']}/{row['episodes']}")
            for (kind, ok, pusher, block), errs in sorted(split_episodes(row["per_episode"]).items()):
                print(f"  {kind:11s} success {ok!s:5s} pusher in {pusher!s:5s} block in {block!s:5s} "
                      f"{len(errs):3d}  (pusher, block) error: {errs[:6]}")


if __name__ == "__main__":
    main()
