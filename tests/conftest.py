import os

# Tests run headless and offline; keep threads low so parallel CPU work stays predictable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

