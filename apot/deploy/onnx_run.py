"""ONNX models written by ``apot export --format onnx``: read them safely, run them in
ONNX Runtime's CPU provider, and count the convolutions it runs on integers.

A file is refused with one line (UserError) when it is missing, too large, not ONNX (truncated,
another format), not ours (no ``apot.form`` metadata), keeps its weights outside the file, or
lacks the ``images`` input (N, 3, S, S) float32 and ``logits`` output; then onnx.checker's full
check runs on it.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from apot.deploy.onnx_export import IDENTITY_CONV, INPUT, METADATA_PREFIX, OUTPUT
from apot.errors import UserError, first_line

MAX_ONNX_BYTES = 1 << 30     # a ResNet-50 in float32 is about 100 MB
QUOTED_CHARS = 200            # of a library's message quoted in a one-line refusal
# the operators that compute a convolution on integers, after ONNX Runtime's graph optimization
INTEGER_CONV_OPS = ("QLinearConv", "NhwcQLinearConv", "ConvInteger")
FIX = "re-export it with apot export --format onnx"


def read_onnx(path: Path):
    """(ModelProto, metadata without the apot. prefix) of an apot ONNX file, checked."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file; {FIX}")
    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise UserError(f"{path}: {size:,} bytes, more than the {MAX_ONNX_BYTES:,} an apot "
                        f"model can be; {FIX}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        why = first_line(exc, QUOTED_CHARS)
        raise UserError(f"{path}: not a readable ONNX model ({why}): truncated or another "
                        f"format; {FIX}") from None
    meta = {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(METADATA_PREFIX)}
    if "form" not in meta or not model.graph.node:
        raise UserError(f"{path}: an ONNX model that apot export did not write (no "
                        f"{METADATA_PREFIX}form metadata); {FIX}")
    problem = _interface_problem(model) or _external_problem(model)
    if problem:
        raise UserError(f"{path}: {problem}; {FIX}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        why = first_line(exc, QUOTED_CHARS)
        raise UserError(f"{path}: the ONNX checker refuses it ({why}); {FIX}") from None
    return model, meta


def describe_onnx(path: Path, meta: dict[str, str]) -> dict:
    """The model fields (arch, bits, scheme, k, first_last) an apot ONNX file's metadata
    states, checked (UserError naming the bad one)."""
    from apot.models import ARCHS
    from apot.quant.convert import FIRST_LAST_POLICIES
    from apot.quant.schemes import FLOAT_BITS, MODEL_BITS, scheme_names

    checks = {"arch": (str, lambda v: v in ARCHS),
              "bits": (int, lambda v: v in MODEL_BITS or v == FLOAT_BITS),
              "scheme": (str, lambda v: v in scheme_names()),
              "k": (int, lambda v: 1 <= v <= 8),
              "first_last": (str, lambda v: v in FIRST_LAST_POLICIES),
              "num_classes": (int, lambda v: v >= 2)}
    fields = {}
    for field, (kind, valid) in checks.items():
        try:
            value = kind(meta[field])
        except (KeyError, ValueError):
            value = None
        if value is None or not valid(value):
            raise UserError(f"{path}: its {METADATA_PREFIX}{field} metadata is "
                            f"{meta.get(field, 'missing')!r}, not a model apot builds; {FIX}")
        fields[field] = value
    fields.pop("num_classes")
    return fields


def _interface_problem(model) -> str | None:
    from onnx import TensorProto
    inputs = {i.name: i for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    if INPUT not in inputs:
        return f"no {INPUT!r} input (it has {', '.join(inputs) or 'none'})"
    kind = inputs[INPUT].type.tensor_type
    if kind.elem_type != TensorProto.FLOAT or len(kind.shape.dim) != 4 \
            or kind.shape.dim[1].dim_value != 3:
        return f"its {INPUT!r} input is not (N, 3, S, S) float32"
    if outputs != [OUTPUT]:
        return f"its outputs are {outputs}, not [{OUTPUT!r}]"
    return None


def _external_problem(model) -> str | None:
    from onnx import TensorProto
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            return f"initializer {tensor.name} keeps its data outside the file"
    return None


class OnnxModel:
    """An ONNX Runtime CPU session called like a torch model (logits of normalized images),
    timing its own runs."""

    def __init__(self, path: Path, threads: int | None, spinning: bool = True):
        """``spinning=False``: the runtime's worker threads sleep as soon as a run ends instead
        of spinning for the next one (several sessions taking turns, as in bench/onnx.py,
        would otherwise steal each other's cores)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        with tempfile.TemporaryDirectory() as folder:
            optimized = os.path.join(folder, "optimized.onnx")
            options.optimized_model_filepath = optimized
            try:
                self.session = ort.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT raises its own exception types
                why = first_line(exc, QUOTED_CHARS)
                raise UserError(f"{path}: ONNX Runtime cannot load it ({why}); {FIX}") from None
            self.integer_convs, self.optimized_ops = count_integer_convs(optimized)
        self.seconds = 0.0

    def eval(self):
        return self

    def to(self, device):
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        start = time.perf_counter()
        logits = self.session.run([OUTPUT], {INPUT: images})[0]
        self.seconds += time.perf_counter() - start
        return torch.from_numpy(logits)


def count_integer_convs(optimized_path: str) -> tuple[int, dict[str, int]]:
    """(convolutions run on integers, count of each operator) in ONNX Runtime's optimized
    graph, as it wrote it: a fused int8 convolution shows as QLinearConv (NhwcQLinearConv in
    channels-last form), an exact one as ConvInteger; a silent fallback to float shows as Conv.
    The qdq form's identity convolution (IDENTITY_CONV, named so by the exporter, whose name the
    runtime's fused node keeps) is not one of the model's and is left out of the first count."""
    import onnx
    graph = onnx.load(optimized_path, load_external_data=False).graph
    ops: dict[str, int] = {}
    integer = 0
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        integer += node.op_type in INTEGER_CONV_OPS and not node.name.startswith(IDENTITY_CONV)
    return integer, dict(sorted(ops.items()))


def compare_onnx(model: torch.nn.Module, path: Path, batches: list, threads: int | None,
                 input_size: int) -> dict:
    """The checkpoint's torch model against the ONNX file ``path`` on the same ``batches``
    (normalized images, labels): each one's top-1, the predictions that differ, and the ONNX
    model's speed against the same network in float32 (FLOAT_FORM, built here), the two run
    batch by batch in turn so that both see the same machine load."""
    from apot.deploy.onnx_export import FLOAT_FORM, build_onnx

    quantized = OnnxModel(path, threads)
    with tempfile.TemporaryDirectory() as folder:
        twin_path = Path(folder) / "float.onnx"
        twin_path.write_bytes(build_onnx(model, FLOAT_FORM, input_size, {}).SerializeToString())
        twin = OnnxModel(twin_path, threads)
    n = hits_torch = hits_onnx = differing = 0
    model.eval()
    for x, y in batches:
        with torch.no_grad():
            reference = model(x).argmax(1)
        twin(x)
        predicted = quantized(x).argmax(1)
        n += len(y)
        hits_torch += int((reference == y).sum())
        hits_onnx += int((predicted == y).sum())
        differing += int((predicted != reference).sum())
    if n == 0:
        raise UserError("no images to verify the ONNX model on")
    return {"n": n, "checkpoint_top1": 100.0 * hits_torch / n, "onnx_top1": 100.0 * hits_onnx / n,
            "differing_predictions": differing,
            "images_per_s": round(n / quantized.seconds, 1),
            "float32_images_per_s": round(n / twin.seconds, 1),
            "speedup_over_float32": round(twin.seconds / quantized.seconds, 3),
            "integer_convs": quantized.integer_convs, "threads": threads, "cpu": cpu_name()}


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else the platform's word for it)."""
    import platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
