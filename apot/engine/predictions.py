"""Per-image test predictions of an evaluated model, kept so that any two models evaluated on the
same test images can be compared image by image (the paired test-set error of apot.reporting.noise).

A file ``predictions.npz`` holds three arrays:
  predicted  int16 (N,)  the predicted class of each test image, in the prepared split's order
  labels     int16 (N,)  the true class of each test image
  identity   str ()      what the test images are (images_identity): two files compare only when
                         their identities are equal
No torch here: the claims read these files without it.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apot.errors import UserError
from apot.layout import write_bytes_atomic

MAX_IMAGES = 10_000_000  # a test split larger than this is not a prediction file of ours
FIELDS = ("predicted", "labels", "identity")


@dataclass(frozen=True)
class Predictions:
    predicted: np.ndarray  # int16 (N,)
    labels: np.ndarray     # int16 (N,)
    identity: str

    @property
    def correct(self) -> np.ndarray:
        """bool (N,): the images this model classifies correctly."""
        return self.predicted == self.labels

    @property
    def top1(self) -> float:
        """Percent of the N images classified correctly."""
        return 100.0 * float(self.correct.mean())


def images_identity(manifest: dict) -> str:
    """What a prepared dataset's test images are: the sha256 of its test tensors, or for an image
    folder (ImageNet) the fingerprint of its listing."""
    files = manifest.get("files") or {}
    if "test.pt" in files:
        return f"test.pt sha256 {files['test.pt']}"
    listing = (manifest.get("source") or {}).get("listing_sha256")
    return f"folder listing sha256 {listing}"


def write_predictions(path: str | Path, predicted, labels, identity: str) -> dict:
    """Write the file atomically; returns its record for a metrics file: {file, images,
    identity, top1}."""
    predicted = np.asarray(predicted, dtype=np.int16).reshape(-1)
    labels = np.asarray(labels, dtype=np.int16).reshape(-1)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.shape[0]} predictions for {labels.shape[0]} labels")
    buffer = io.BytesIO()
    np.savez(buffer, predicted=predicted, labels=labels, identity=np.array(identity))
    write_bytes_atomic(Path(path), buffer.getvalue())
    kept = Predictions(predicted, labels, identity)
    return {"file": Path(path).name, "images": int(len(labels)), "identity": identity,
            "top1": round(kept.top1, 4)}


def read_predictions(path: str | Path) -> Predictions:
    """The file's arrays, checked (UserError naming the file and the fix otherwise)."""
    path = Path(path)
    again = "evaluate the model again (snakemake re-runs the job that wrote it)"
    try:
        with np.load(path, allow_pickle=False) as stored:
            missing = [f for f in FIELDS if f not in stored.files]
            if missing:
                raise UserError(f"{path} is not a predictions file (no {', '.join(missing)}); "
                                f"{again}")
            predicted, labels = stored["predicted"], stored["labels"]
            identity = str(stored["identity"])
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {again}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is damaged ({exc}); {again}") from None
    if (predicted.ndim != 1 or predicted.shape != labels.shape or len(labels) > MAX_IMAGES
            or predicted.dtype.kind != "i" or labels.dtype.kind != "i"):
        raise UserError(f"{path} does not hold one integer prediction and label per image; "
                        f"{again}")
    return Predictions(predicted, labels, identity)
