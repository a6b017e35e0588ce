"""Where the datasets' and released models' sources are, without importing torch: the Snakefile
reads these when it is parsed, and on a cluster every job parses it again."""
from __future__ import annotations

import os
from pathlib import Path

MIRROR_ENV = "APOT_DATA_MIRROR"


def mirror_folder(mirror: str | os.PathLike | None) -> Path | None:
    """The mirror folder from the argument, else from APOT_DATA_MIRROR, else None."""
    value = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    return Path(value) if value else None


# torchvision's ImageNet weights the authors start from (``pretrained=True``, i.e. IMAGENET1K_V1):
# arch -> file name in torch's hub cache. Stated here so that parsing the workflow can find the
# cached file without importing torch; tests/unit/test_study.py checks them against torchvision.
TORCHVISION_WEIGHTS = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
}
TORCHVISION_URL = "https://download.pytorch.org/models/{file}"
TORCHVISION_HOST = ("download.pytorch.org", 443)


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint cache, as torch.hub.get_dir() computes it (TORCH_HOME, else
    XDG_CACHE_HOME/torch, else ~/.cache/torch), plus /checkpoints."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"
