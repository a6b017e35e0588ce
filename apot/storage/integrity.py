"""Checks of the files results rely on: a run folder's files against the record its
metrics.json keeps, a packed model against the record its packed.json keeps, a prepared
dataset's tensors against its manifest.

A completed run's metrics.json lists the size and sha256 of checkpoint.pt, best.pt and
history.csv as they were when it was written. The workflow checks every completed run when it
starts (rules/common.smk) and redoes one whose files are missing or differ; `apot summarize`
refuses to aggregate it. Results from before this record (no "files" key) are not checkable
and are taken as they are. A packed.json records the size and sha256 of the packed file it
describes (packed_bytes, packed_sha256): the workflow redoes an export whose file differs, or
whose record is older than the sha256, and `apot eval --packed` checks a file against the
packed.json beside it. An onnx.json does the same for its model.onnx (onnx_bytes, onnx_sha256).
"""
from __future__ import annotations

import os
from pathlib import Path

from apot.errors import UserError
from apot.layout import (BEST, CHECKPOINT, HISTORY, MANIFEST, METRICS, ONNX_MODEL, ONNX_RESULT,
                         PACKED, PACKED_RESULT, PREDICTIONS, file_sha256)
from apot.storage.jsonfile import read_record

RECORDED_FILES = (CHECKPOINT, BEST, HISTORY, PREDICTIONS)  # the files metrics.json records


def file_record(path: str | os.PathLike) -> dict:
    """{"bytes": size, "sha256": hex digest} of a file."""
    return {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def run_files_record(folder: str | os.PathLike) -> dict:
    """The record of a completed run's files (those present), for its metrics.json."""
    folder = Path(folder)
    return {name: file_record(folder / name) for name in RECORDED_FILES
            if (folder / name).is_file()}


def check_files(folder: Path, record: dict) -> list[str]:
    """What differs between the files in ``folder`` and ``record`` ({name: file_record})."""
    problems = []
    for name, expected in sorted(record.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif os.path.getsize(path) != expected.get("bytes"):
            problems.append(f"{name} has {os.path.getsize(path)} bytes, "
                            f"{expected.get('bytes')} when written")
        elif file_sha256(path) != expected.get("sha256"):
            problems.append(f"{name} changed since it was written (sha256 differs)")
    return problems


def record_in(folder: str | os.PathLike, name: str) -> tuple[object, list[str] | None]:
    """(the JSON record ``name`` in ``folder``, None); (None, []) when there is none yet;
    (None, [why]) when it cannot be read."""
    path = Path(folder) / name
    if not path.is_file():
        return None, []
    record, problem = read_record(path)
    return record, ([problem] if problem else None)


def check_run(folder: str | os.PathLike) -> list[str]:
    """Problems of a completed run's folder (empty: it is whole). A folder without
    metrics.json has not completed: nothing to check here."""
    metrics, problems = record_in(folder, METRICS)
    if problems is not None:
        return problems
    if not isinstance(metrics, dict) or not isinstance(metrics.get("best_top1"), (int, float)):
        return [f"{METRICS} is not the metrics of a run"]
    return check_files(Path(folder), metrics.get("files") or {})


def check_packed(folder: str | os.PathLike) -> list[str]:
    """Problems of a run folder's packed model against its packed.json (empty: whole, or not
    exported yet)."""
    folder = Path(folder)
    return packed_record_problems(folder / PACKED, folder / PACKED_RESULT) or []


def check_onnx(folder: str | os.PathLike) -> list[str]:
    """Problems of a run folder's ONNX model against its onnx.json (empty: whole, or not
    exported yet)."""
    folder = Path(folder)
    return packed_record_problems(folder / ONNX_MODEL, folder / ONNX_RESULT, "onnx") or []


def packed_record_problems(packed: str | os.PathLike, record_path: str | os.PathLike,
                           kind: str = "packed") -> list[str] | None:
    """Problems of the exported file ``packed`` against the export record ``record_path`` (an
    ``apot export --result`` file, whose <kind>_bytes and <kind>_sha256 describe it); None
    when there is no such record, or it describes another file."""
    packed, record_path = Path(packed), Path(record_path)
    if not record_path.is_file():
        return None
    record, problem = read_record(record_path)
    if problem:
        return [problem]
    if not isinstance(record, dict) or Path(str(record.get("out"))).name != packed.name:
        return None
    if not isinstance(record.get(f"{kind}_sha256"), str):
        return [f"{record_path.name} records no sha256 of {packed.name} (written before apot "
                f"recorded it)"]
    return check_files(packed.parent, {packed.name: {"bytes": record.get(f"{kind}_bytes"),
                                                     "sha256": record[f"{kind}_sha256"]}})


def verify_packed_file(packed: str | os.PathLike) -> None:
    """UserError when the packed.json beside a packed file records another file than the one
    there (truncated, a flipped bit, replaced): such a file would evaluate without a sign."""
    packed = Path(packed)
    problems = packed_record_problems(packed, packed.parent / PACKED_RESULT)
    if problems:
        raise UserError(f"packed file {packed}: {'; '.join(problems)} (against "
                        f"{packed.parent / PACKED_RESULT}); export it again with apot export")


def check_prepared(folder: str | os.PathLike) -> list[str]:
    """Problems of a prepared dataset's folder against its manifest (empty: whole, or not
    prepared yet)."""
    folder = Path(folder)
    manifest, problems = record_in(folder, MANIFEST)
    if problems is not None:
        return problems
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return []  # ImageNet: a manifest of a folder, no tensors here
    problems = []
    for name, digest in sorted(files.items()):
        if not (folder / name).is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(folder / name) != digest:
            problems.append(f"{name} does not match its manifest (changed or damaged)")
    return problems
