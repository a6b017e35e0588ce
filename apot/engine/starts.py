"""A chain's start: a released model copied into one checkpoint file that records its origin.

``apot stage-start`` writes ``{"state_dict": ..., "origin": {...}}`` (atomically), where origin
names the released file or torchvision's weights, their sha256 and (for torchvision) the URL.
``apot train --init`` reads the origin back into the run's ``started_from``, so every run of a
warm chain says which released model it started from. Only tensors are stored: the file loads
with ``weights_only=True`` like every other checkpoint of this package.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from apot.data.sources import TORCHVISION_WEIGHTS, torch_hub_checkpoints
from apot.errors import UserError
from apot.layout import file_sha256
from apot.storage.checkpoints import extract_state_dict, load_file, save_atomic


def authors_start(checkpoint: Path) -> tuple[dict, dict]:
    """(state dict, origin) of one of the authors' released checkpoints."""
    if checkpoint is None:
        raise UserError("--start authors needs --checkpoint (the released file)")
    state = extract_state_dict(load_file(checkpoint), source=str(checkpoint))
    return state, {"kind": "authors", "file": str(Path(checkpoint).resolve()),
                   "sha256": file_sha256(checkpoint)}


def torchvision_start(arch: str) -> tuple[dict, dict]:
    """(state dict, origin) of torchvision's pretrained ImageNet weights of ``arch`` (the
    IMAGENET1K_V1 weights the authors' ``pretrained=True`` loads), through torchvision's own
    weights API: from torch's hub cache, else downloaded into it."""
    import torchvision

    if arch not in TORCHVISION_WEIGHTS:
        raise UserError(f"torchvision has no pretrained ImageNet {arch} here; choose one of "
                        f"{', '.join(TORCHVISION_WEIGHTS)}")
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    cached = torch_hub_checkpoints() / TORCHVISION_WEIGHTS[arch]
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        # URLError is an OSError; a damaged cached file fails to load, a download is checked
        # against the hash prefix in its name
        raise UserError(
            f"cannot load torchvision's pretrained {arch} weights ({str(exc).splitlines()[0]}). "
            f"Offline, or a damaged file? Download {weights.url} on a machine with internet and "
            f"put it at {cached} (replacing any file there)") from None
    return dict(state), {"kind": "torchvision", "weights": f"{type(weights).__name__}.{weights.name}",
                         "url": weights.url, "file": str(cached),
                         "sha256": file_sha256(cached) if cached.is_file() else None}


def stage_start(start: str, arch: str, out: Path, checkpoint: Path | None = None) -> dict:
    """Write the start checkpoint ``out``; returns its origin (printed as JSON)."""
    if start == "authors":
        state, origin = authors_start(checkpoint)
    elif start == "torchvision":
        state, origin = torchvision_start(arch)
    else:
        raise UserError(f"unknown start {start!r} (authors or torchvision)")
    origin["arch"] = arch
    save_atomic({"state_dict": state, "origin": origin}, out)
    return {"out": str(out), "sha256": file_sha256(out), "origin": origin}
