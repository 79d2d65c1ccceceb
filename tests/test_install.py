"""The install step gives a consistent stack: torch + torchvision + timm import together."""
import shutil
import subprocess
import sys
from pathlib import Path


def test_timm_and_torchvision_import_with_torch():
    import timm
    import torch
    import torchvision

    # The trap this guards against: a torchvision built for another torch fails here
    # ("operator torchvision::nms does not exist").
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0]
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 192)


def test_top_level_packages_import():
    import envs  # noqa: F401
    import planners  # noqa: F401
    import pretrain  # noqa: F401
    import worldmodel  # noqa: F401


def test_worldmodel_imports_no_other_package():
    """The dependency direction is a promise: worldmodel imports none of envs/pretrain/planners."""
    offenders = []
    for path in (Path(__file__).parents[1] / "worldmodel").rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")) and any(
                    s.split()[1].split(".")[0] == p for p in ("envs", "pretrain", "planners")):
                offenders.append(f"{path.name}: {s}")
    assert not offenders, offenders


def test_lw_console_script_lists_commands():
    exe = shutil.which("lw") or str(Path(sys.executable).parent / "lw")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for cmd in ("collect", "train-rae", "pretrain", "benchmark", "demo"):
        assert cmd in out.stdout
    bad = subprocess.run([exe, "no-such-command"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown command" in bad.stderr
