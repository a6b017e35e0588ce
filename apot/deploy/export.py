"""``apot export``: a quantized checkpoint written as a packed file (integer codes,
apot.deploy.packed_file) or an ONNX model (apot.deploy.onnx_export), and optionally checked
against the checkpoint on a dataset's test images."""
from __future__ import annotations

from pathlib import Path

import torch

from apot.deploy.onnx_export import ONNX_FORMS, export_onnx
from apot.deploy.onnx_run import compare_onnx
from apot.deploy.packed_file import export_packed, load_packed
from apot.engine.evaluate import Images, compare
from apot.engine.threads import use_threads
from apot.errors import UserError
from apot.models import ARCHS, load_model
from apot.quant.convert import first_and_last
from apot.quant.schemes import MODEL_BITS

EXPORT_FORMATS = ("packed", "onnx")
VERIFY_BATCH = 100


def export_model(model: dict, checkpoint: Path, out: Path, format: str = EXPORT_FORMATS[0],
                 onnx_form: str | None = None, verify: Images | None = None,
                 threads: int | None = None) -> dict:
    """Write the checkpoint ``checkpoint`` of the model ``model`` ({"arch", "bits", "scheme",
    "k", "first_last"}) to ``out`` in ``format`` (an ONNX file in ``onnx_form``, default
    ONNX_FORMS[0]); with ``verify``, also run both on those images ("verify" in the result).
    Returns what apot export prints."""
    if format != "onnx" and onnx_form is not None:
        raise UserError("--onnx-form applies to --format onnx")
    if format == "packed" and model["bits"] not in MODEL_BITS:
        raise UserError(f"--format packed stores quantized models (bits {MODEL_BITS[0]}.."
                        f"{MODEL_BITS[-1]}); a {model['bits']}-bit model exports with "
                        f"--format onnx --onnx-form float")
    use_threads(threads)
    net, _ = load_model(checkpoint, model)
    net.eval()
    classes = net.get_submodule(first_and_last(net)[1]).out_features
    input_size = ARCHS[model["arch"]][2]
    if format == "onnx":
        result = export_onnx(net, model, classes, checkpoint, out, onnx_form or ONNX_FORMS[0],
                             input_size)
    else:
        result = export_packed(net, model, classes, checkpoint, out)
    if verify is not None:
        batches, _, dataset = verify.batches(input_size, torch.device("cpu"))
        checked = (compare_onnx(net, out, list(batches), threads, input_size)
                   if format == "onnx" else compare(net, load_packed(out)[0], batches))
        result["verify"] = {"data": str(verify.data), "dataset": dataset,
                            "limit_per_class": verify.limit_per_class, **checked}
    return result
