"""A prepared dataset's manifest (manifest.json, written by apot prepare-data): what it holds
and which registered dataset it was made from. No torch: reports read manifests too."""
from __future__ import annotations

import os
from pathlib import Path

from apot.data.datasets import get_dataset
from apot.errors import UserError
from apot.layout import MANIFEST
from apot.storage.jsonfile import read_json


def load_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} is not a prepared dataset (no {MANIFEST}); "
                        f"run 'apot prepare-data' first")
    return read_json(path, "prepare the dataset again")


def manifest_dataset(manifest: dict, folder: str | os.PathLike):
    """The registered dataset (apot.data.datasets) a prepared dataset was made from."""
    try:
        return get_dataset(manifest.get("dataset", ""))
    except ValueError as exc:
        raise UserError(f"{folder}: its manifest names {exc}; prepare it again with "
                        f"'apot prepare-data'") from None
