"""Headless MuJoCo rendering: pick an OpenGL backend, then render small frames fast.

MuJoCo reads `MUJOCO_GL` once, when `mujoco` is first imported, so the backend must be
chosen before that import. `select_gl_backend()` keeps a user's choice; otherwise it
probes EGL, then OSMesa, each in a short subprocess (a failed GL context can leave the
probing process unusable) and exports the first that works, so worker processes inherit
it without probing again.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from worldmodel.errors import SystemLibraryError

BACKENDS = ("egl", "osmesa")  # headless backends, in order of preference (EGL is faster)
SYSTEM_PACKAGES = {"egl": "libegl1 libgl1-mesa-dri", "osmesa": "libosmesa6"}

_PROBE = """
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size="0.1"/></worldbody></mujoco>')
r = mujoco.Renderer(m, 8, 8)
r.update_scene(mujoco.MjData(m))
r.render()
"""


def _probe(backend: str, timeout: float = 60.0) -> str | None:
    """Try to render one tiny frame with `backend`; return None on success, else the error."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend in ("egl", "osmesa"):
        env.setdefault("PYOPENGL_PLATFORM", backend)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


_selection_error: str | None = None  # why no backend could be chosen (raised when rendering)


def select_gl_backend(strict: bool = True) -> str:
    """Choose `MUJOCO_GL` (keeping the user's value) and return it. Call before `import mujoco`.

    With strict=False a failure is remembered instead of raised, so that physics-only use
    (`render=False`) still works on a machine without GL; the first renderer raises it.
    """
    global _selection_error
    if _selection_error is not None:
        if strict:
            raise SystemLibraryError(_selection_error)
        return ""
    chosen = os.environ.get("MUJOCO_GL", "").strip()
    if chosen:
        return chosen
    if "mujoco" in sys.modules:
        # Too late to choose: MuJoCo already picked its default (GLFW on Linux, needs a display).
        return ""
    errors = {}
    for backend in BACKENDS:
        err = _probe(backend)
        if err is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        errors[backend] = err
    tried = "; ".join(f"{b}: {e}" for b, e in errors.items())
    _selection_error = (
        "no headless OpenGL backend works for MuJoCo rendering (" + tried + "). Install EGL "
        f"(apt-get install {SYSTEM_PACKAGES['egl']}) or OSMesa (apt-get install "
        f"{SYSTEM_PACKAGES['osmesa']}), or set MUJOCO_GL=egl|osmesa|glfw yourself; "
        "make_task(..., render=False) runs the physics without rendering.")
    if strict:
        raise SystemLibraryError(_selection_error)
    return ""


def _load_triton_first() -> None:
    """Mesa's software GL and triton each load an LLVM; importing triton (which torch.compile,
    torch._dynamo and even `torch.optim` construction do lazily) after a GL context exists
    crashes the process. Import it before the first context, when it is installed."""
    if os.environ.get("MUJOCO_GL") in ("egl", "osmesa"):
        try:
            import triton  # noqa: F401
        except ImportError:
            pass


def import_mujoco():
    """`import mujoco`, which initialises the MUJOCO_GL backend. A backend whose system library is
    missing fails there, deep inside PyOpenGL and with an unrelated-looking error (an
    AttributeError on 'glGetError', an ImportError): named here as a SystemLibraryError."""
    try:
        import mujoco
    except Exception as e:  # the error type differs per backend and library
        backend = os.environ.get("MUJOCO_GL", "").strip()
        if not backend:
            raise
        raise SystemLibraryError(
            f"import mujoco failed with MUJOCO_GL={backend!r} ({type(e).__name__}: {e}): the library of "
            f"that backend is missing or does not work. Install EGL (apt-get install {SYSTEM_PACKAGES['egl']}) "
            f"or OSMesa (apt-get install {SYSTEM_PACKAGES['osmesa']}), or unset MUJOCO_GL so that a working "
            "backend is chosen for you.") from e
    return mujoco


def free_camera(distance: float, elevation: float, azimuth: float, lookat) -> "mujoco.MjvCamera":
    """A fixed free camera (degrees for the angles, metres for the rest)."""
    import mujoco

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.distance, cam.elevation, cam.azimuth = float(distance), float(elevation), float(azimuth)
    cam.lookat[:] = np.asarray(lookat, dtype=np.float64)
    return cam


class FrameRenderer:
    """Renders `data` from one camera to (H, W, 3) uint8, with the costly effects turned off.

    Shadows cost ~7x on a software renderer and reflections another pass each; the frames
    are tiny and meant for a model, so both are off (and every light's castshadow too).
    Spheres and capsules are tessellated coarser (12 slices instead of 28): invisible at
    64 px, ~3x fewer triangles. Multisampling stays on: without it thin links alias badly.
    """

    SLICES, STACKS = 12, 6  # mesh resolution of primitive geoms (MuJoCo's defaults: 28, 16)

    def __init__(self, model, height: int, width: int, camera):
        select_gl_backend()
        _load_triton_first()
        import mujoco

        model.light_castshadow[:] = 0
        model.vis.quality.numslices = min(model.vis.quality.numslices, self.SLICES)
        model.vis.quality.numstacks = min(model.vis.quality.numstacks, self.STACKS)
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as e:  # the GL error types differ per backend
            backend = os.environ.get("MUJOCO_GL", "<unset>")
            raise SystemLibraryError(
                f"could not create a MuJoCo renderer with MUJOCO_GL={backend!r}: {e}. For headless "
                f"rendering install EGL ({SYSTEM_PACKAGES['egl']}) or OSMesa ({SYSTEM_PACKAGES['osmesa']}) "
                "and set MUJOCO_GL=egl or MUJOCO_GL=osmesa.") from e
        flags = self._renderer.scene.flags
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):
            flags[flag] = 0
        self.camera = camera

    def render(self, data) -> np.ndarray:
        """(H, W, 3) uint8, a fresh array."""
        self._renderer.update_scene(data, self.camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
