import os

# Tests run headless and offline; keep threads low so parallel CPU work stays predictable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_report_header(config):
    """The versions a run was measured on (README: supported torch range)."""
    import mujoco
    import torch

    return f"torch {torch.__version__}, mujoco {mujoco.__version__}, threads {torch.get_num_threads()}"
