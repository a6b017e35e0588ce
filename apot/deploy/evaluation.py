"""``apot eval``: a checkpoint, a packed model or an ONNX model evaluated on a dataset, with the
facts of where it ran and what it was. A checkpoint needs its model described ({"arch",
"bits", "scheme", "k", "first_last"}); a packed or ONNX file names its model itself."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from apot.deploy.onnx_run import OnnxModel, describe_onnx, read_onnx
from apot.deploy.packed_file import load_packed
from apot.deploy.packed_layers import ARITHMETICS, PackedQuantConv2d
from apot.engine.device import resolve_device
from apot.engine.evaluate import Images, evaluate
from apot.engine.predictions import write_predictions
from apot.engine.threads import use_threads
from apot.errors import UserError, flags
from apot.layout import file_sha256
from apot.models import ARCHS, DESCRIPTION_DEFAULTS, load_model
from apot.models import DESCRIPTION_FIELDS as MODEL_FIELDS
from apot.storage.integrity import verify_packed_file

SOURCES = ("checkpoint", "packed", "onnx")


def eval_model(source: str, given: dict, arithmetic: str | None) -> tuple[dict, str | None]:
    """(the model description, the arithmetic) of ``apot eval`` from the given model flags
    (``given``: MODEL_FIELDS, None where left out) of a ``source`` (SOURCES): a checkpoint
    needs arch and bits and takes the defaults for the rest; a packed or ONNX file takes none."""
    named = [f for f in MODEL_FIELDS if given.get(f) is not None]
    if source != "checkpoint":
        what = "a packed file" if source == "packed" else "an ONNX file"
        if named:
            raise UserError(f"{flags(named)}: {what} names its model itself; "
                            f"drop {'them' if len(named) > 1 else 'it'}")
        if source == "onnx" and arithmetic is not None:
            raise UserError("--arithmetic applies to --packed models; an ONNX file's form "
                            "fixes its arithmetic")
        return {}, arithmetic or (ARITHMETICS[0] if source == "packed" else None)
    missing = [f for f in ("arch", "bits") if given.get(f) is None]
    if missing:
        raise UserError(f"--checkpoint needs {flags(missing, ' and ')}")
    if arithmetic is not None:
        raise UserError("--arithmetic applies to --packed models; a checkpoint computes as it "
                        "was trained")
    return {**DESCRIPTION_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}, None


def evaluate_file(source: str, path: Path, model: dict, arithmetic: str | None, images: Images,
                  device: str = "auto", threads: int | None = None,
                  predictions: Path | None = None) -> dict:
    """Evaluate the model file ``path`` of kind ``source`` (its description ``model`` and
    ``arithmetic`` from eval_model) on ``images``; write each image's prediction to
    ``predictions`` if given. Returns apot eval's JSON: scores, the model, the file's sha256,
    the data, device, threads and seconds."""
    torch_device = torch.device("cpu") if source == "onnx" else resolve_device(device)
    in_use = use_threads(threads)
    start = time.perf_counter()
    load = {"checkpoint": _checkpoint, "packed": _packed, "onnx": _onnx}[source]
    net, batches, dataset, facts = load(path, model, arithmetic, images, torch_device, threads)
    result = evaluate(net, batches, torch_device, keep_predictions=predictions is not None)
    if source == "onnx":
        result["images_per_s"] = round(result["n"] / max(net.seconds, 1e-9), 1)
    if predictions is not None:
        result["predictions"] = write_predictions(
            predictions, result.pop("predicted").numpy(), result.pop("labels").numpy(),
            images.identity())
    return {**result, **facts, "data": str(images.data), "dataset": dataset,
            "split": images.split, "device": str(torch_device), "threads": in_use,
            "seconds": round(time.perf_counter() - start, 2)}


def _checkpoint(path, model, arithmetic, images, device, threads) -> tuple:
    batches, classes, dataset = images.batches(ARCHS[model["arch"]][2], device)
    net, _ = load_model(path, model, classes)
    return net, batches, dataset, {**model, "checkpoint": str(path),
                                   "checkpoint_sha256": file_sha256(path)}


def _packed(path, model, arithmetic, images, device, threads) -> tuple:
    verify_packed_file(path)
    net, header = load_packed(path, arithmetic)
    batches, classes, dataset = images.batches(ARCHS[header["arch"]][2], device)
    _check_classes(path, header["num_classes"], classes)
    return net, batches, dataset, {
        **{f: header[f] for f in MODEL_FIELDS}, "packed": str(path),
        "packed_sha256": file_sha256(path), "arithmetic": arithmetic,
        "layer_arithmetic": layer_arithmetic(net)}


def _onnx(path, model, arithmetic, images, device, threads) -> tuple:
    _, meta = read_onnx(path)
    described = describe_onnx(path, meta)
    batches, classes, dataset = images.batches(ARCHS[described["arch"]][2], device)
    _check_classes(path, int(meta["num_classes"]), classes)
    net = OnnxModel(path, threads)
    return net, batches, dataset, {
        **{f: described[f] for f in MODEL_FIELDS}, "onnx": str(path),
        "onnx_sha256": file_sha256(path), "onnx_form": meta["form"],
        "integer_convs": net.integer_convs, "quantized_convs": int(meta["quantized_convs"])}


def _check_classes(path: Path, model_classes: int, data_classes: int) -> None:
    if model_classes != data_classes:
        raise UserError(f"{path} holds a model for {model_classes} classes; the data has "
                        f"{data_classes}")


def layer_arithmetic(model) -> dict[str, int]:
    """How many quantized layers computed in each arithmetic (apot.deploy.packed_layers)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, PackedQuantConv2d):
            counts[module.arithmetic] = counts.get(module.arithmetic, 0) + 1
    return counts
