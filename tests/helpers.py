"""Helpers shared by the unit and integration tests: where the repository and the offline
material are, and what a refusal's message says with its paths taken out."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Offline material shipped beside every checkout (../shared): CIFAR-10 JPEGs and the authors'
# released ResNet-20 checkpoints. APOT_SHARED overrides the location.
SHARED = Path(os.environ.get("APOT_SHARED", ROOT.parent / "shared"))
CIFAR10_ARCHIVE = SHARED / "data" / "cifar-10-images.tar.gz"
AUTHORS_CHECKPOINTS = SHARED / "data" / "apot-authors-checkpoints"
CONFIG_FILE = ROOT / "config.yaml"


def message(info: pytest.ExceptionInfo, *paths: Path) -> str:
    """The exception's message with ``paths`` taken out (tmp_path holds the test's name); each
    must be named in it."""
    text = str(info.value)
    for path in paths:
        assert str(path) in text, f"message does not name {path}: {text}"
        text = text.replace(str(path), "<path>")
    return text


def torch_path(monkeypatch, fn, *args):
    """``fn(*args)`` through the torch operations, neither fused kernel (apot.quant.cpu_fused,
    apot.quant.cuda_fused)."""
    from apot.quant import cpu_fused, cuda_fused
    with monkeypatch.context() as patch:
        patch.setattr(cpu_fused, "AVAILABLE", False)
        patch.setattr(cuda_fused, "ENABLED", False)
        return fn(*args)


TOY = "toy"
# The toy scheme: APoT's construction with 1-bit terms, i.e. the uniform levels written as sums
# of powers of two. Registering it is all a test does; no module is edited. Source text, so
# that a subprocess's start-up (sitecustomize) can run it too.
REGISTER_TOY = f"""
from apot.quant import levels, schemes
schemes.register(schemes.Scheme({TOY!r}, "Toy", lambda bits, k: levels.apot_magnitudes(bits, 1),
                                lambda bits, k: levels.apot_terms(bits, 1), "#8172b3"))
"""
