"""Small, deterministic English phrase builders for state captions.

All cameras look straight down with +x to the right of the image and +y up, so world
directions are said as image directions ("left of", "above"). Wording varies with the
state through `pick`, which hashes rounded numbers: the same state always gives the same
sentence, nearby states often different ones.
"""
from __future__ import annotations

import math

import numpy as np


def pick(options: list[str] | tuple[str, ...], *keys: float) -> str:
    """One of `options`, chosen deterministically from the numbers in `keys`."""
    h = 0
    for k in keys:
        h = (h * 1000003 + int(round(abs(float(k)) * 1000))) % 2_147_483_647
    return options[h % len(options)]


def offset_words(dx: float, dy: float, dead: float = 0.01) -> str:
    """Where a point lies relative to another, given dx = x - x_ref, dy = y - y_ref (metres).

    e.g. "to the left of and above", "below and to the right of", "below"; an axis under
    `dead` metres is ignored.
    """
    horiz = "" if abs(dx) < dead else ("to the right of" if dx > 0 else "to the left of")
    vert = "" if abs(dy) < dead else ("above" if dy > 0 else "below")
    if horiz and vert:
        # name the larger offset first
        return f"{horiz} and {vert}" if abs(dx) >= abs(dy) else f"{vert} and {horiz}"
    return horiz or vert or "at"


def side_words(dx: float, dy: float) -> str:
    """The side ("left", "right", "top", "bottom") that the offset (dx, dy) points to."""
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "top" if dy > 0 else "bottom"


def heading_words(angle: float) -> str:
    """An image-plane direction for an angle in radians (0 = right, pi/2 = up)."""
    names = ("right", "up and to the right", "up", "up and to the left",
             "left", "down and to the left", "down", "down and to the right")
    return names[int(round(angle / (math.pi / 4))) % 8]


def region_words(x: float, y: float, half: float) -> str:
    """Where (x, y) is in a square of side 2 * half around the origin, as a phrase ending in "of":
    "in the upper left of", "in the centre of", "on the right side of", "in the top part of"."""
    third = half / 3
    v = "upper" if y > third else ("lower" if y < -third else "")
    h = "left" if x < -third else ("right" if x > third else "")
    if not v and not h:
        return "in the centre of"
    if v and h:
        return f"in the {v} {h} of"
    if h:
        return f"on the {h} side of"
    return f"in the {'top' if v == 'upper' else 'bottom'} part of"


def distance_words(d: float) -> str:
    """A distance in metres, said in centimetres."""
    cm = d * 100
    return f"about {cm:.0f} cm" if cm >= 2 else "less than 2 cm"


def motion_words(velocity: np.ndarray, toward: np.ndarray | None, slow: float, fast: float) -> str:
    """How a point moves: speed class, and whether toward `toward` (a direction vector) or not."""
    speed = float(np.linalg.norm(velocity))
    if speed < slow:
        return pick(("is nearly still", "is almost at rest", "barely moves"), *velocity)
    pace = "quickly" if speed > fast else "slowly"
    if toward is None or float(np.linalg.norm(toward)) < 1e-9:
        return f"moves {pace} {heading_words(math.atan2(velocity[1], velocity[0]))}"
    cos = float(np.dot(velocity, toward) / (speed * np.linalg.norm(toward)))
    if cos > 0.5:
        rel = pick(("toward it", "closer to it", "in its direction"), *velocity)
    elif cos < -0.5:
        rel = pick(("away from it", "further from it"), *velocity)
    else:
        rel = "sideways past it"
    return f"moves {pace} {rel}"
