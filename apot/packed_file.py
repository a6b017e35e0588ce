"""Packed model files: written by ``apot export``, read by ``apot eval --packed``.

A packed file is a safetensors file (no pickle: reading it runs no code). Its tensors are
``apot.quant.packed.pack_model``'s arrays: per quantized conv "<layer>.codes" (uint8, the
weights' b-bit sign-and-magnitude codes, packed), "<layer>.weight_alpha" and
"<layer>.act_alpha" (float32, one value each); per 8-bit layer "<layer>.codes" (int8, or int16
where the authors' rounding leaves the int8 range) and "<layer>.scale" (max(w), float32); and
the float parts under their state-dict names (batch-norm, biases; float32). Its metadata key
"apot_header" holds a JSON header:

    {"format": "apot-packed", "version": 1, "arch", "num_classes", "bits", "scheme", "k",
     "first_last", "levels": {"weight": table, "activation": table},
     "layers": {name: {"kind", "shape", "width"}}, "source": {"checkpoint", "sha256"}}

where a table is {"scheme", "magnitude_bits", "k", "codes"}: level i of the set is
codes[i] / codes[-1]. A reader checks the tables against its own level sets, so a file is
never read with levels other than those it was written with.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .layout import file_sha256, write_bytes_atomic
from .quant.convert import FIRST_LAST_POLICIES
from .quant.levels import check_k
from .quant.packed import QUANT_CONV, code_table, pack_model, unpack_model
from .quant.schemes import MODEL_BITS, scheme_names

FORMAT, VERSION = "apot-packed", 1
HEADER_KEY = "apot_header"
DESCRIPTION_FIELDS = ("arch", "bits", "scheme", "k", "first_last")


def level_tables(bits: int, scheme: str, k: int) -> dict:
    """The header's level tables of a ``bits``-bit model: signed weights have bits - 1
    magnitude bits, unsigned activations ``bits``."""
    return {"weight": code_table(scheme, bits - 1, k).record(),
            "activation": code_table(scheme, bits, k).record()}


def float32_size(model: nn.Module) -> int:
    """Bytes of the model's float32 state dict saved with ``torch.save`` (the usual file)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def export_packed(model: nn.Module, description: dict, num_classes: int, source: Path,
                  out: Path) -> dict:
    """Write ``model`` (fake-quantized, described by ``description``: arch, bits, scheme, k,
    first_last) to the packed file ``out``, atomically. Returns what ``apot export`` prints."""
    import safetensors.numpy

    if description["bits"] not in MODEL_BITS:
        raise UserError(f"apot export packs quantized models (bits {MODEL_BITS.start}.."
                        f"{MODEL_BITS.stop - 1}); a {description['bits']}-bit model has no "
                        f"codes to pack")
    arrays, layers = pack_model(model)
    header = {"format": FORMAT, "version": VERSION,
              **{field: description[field] for field in DESCRIPTION_FIELDS},
              "num_classes": num_classes,
              "levels": level_tables(description["bits"], description["scheme"],
                                     description["k"]),
              "layers": layers,
              "source": {"checkpoint": source.name, "sha256": file_sha256(source)}}
    data = safetensors.numpy.save(arrays, metadata={HEADER_KEY: json.dumps(header)})
    write_bytes_atomic(out, data)
    packed_bytes, float_bytes = len(data), float32_size(model)
    return {**{field: description[field] for field in DESCRIPTION_FIELDS},
            "checkpoint": str(source), "checkpoint_sha256": header["source"]["sha256"],
            "out": str(out), "packed_bytes": packed_bytes, "float32_bytes": float_bytes,
            "size_ratio": round(packed_bytes / float_bytes, 4),
            "quantized_layers": sum(r["kind"] == QUANT_CONV for r in layers.values()),
            "quantized_weights": sum(int(np.prod(r["shape"])) for r in layers.values()
                                     if r["kind"] == QUANT_CONV)}


def read_packed(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a packed file; UserError naming the problem if it is not one."""
    from safetensors import SafetensorError
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"packed file {path} does not exist or is not a file (check the path)")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, ValueError) as exc:
        raise UserError(f"packed file {path} is truncated or not a safetensors file "
                        f"({_first_line(exc)}); export it again with apot export") from None
    if HEADER_KEY not in metadata:
        raise UserError(f"packed file {path} has no apot header: it is a safetensors file, but "
                        f"not one apot export wrote")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise UserError(f"packed file {path}: its header is not JSON ({exc})") from None
    problem = header_problem(header)
    if problem:
        raise UserError(f"packed file {path}: {problem}; export it again with apot export")
    return header, arrays


def header_problem(header: Any) -> str | None:
    """What is wrong with a packed file's header, or None."""
    from .models import ARCHS

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return f"its header is not an {FORMAT} header"
    if header.get("version") != VERSION:
        return f"format version {header.get('version')!r}; this apot reads version {VERSION}"
    checks = {
        "arch": lambda v: v in ARCHS,
        "bits": lambda v: isinstance(v, int) and v in MODEL_BITS,
        "scheme": lambda v: v in scheme_names(),
        "k": _valid_k,
        "first_last": lambda v: v in FIRST_LAST_POLICIES,
        "num_classes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "layers": lambda v: isinstance(v, dict) and all(
            isinstance(r, dict) and isinstance(r.get("kind"), str)
            and isinstance(r.get("shape"), list) for r in v.values()),
    }
    for field, valid in checks.items():
        if field not in header or not valid(header[field]):
            return f"header field {field!r} is missing or invalid ({header.get(field)!r})"
    expected = level_tables(header["bits"], header["scheme"], header["k"])
    if header.get("levels") != expected:
        return (f"its level tables differ from this apot's {header['scheme']} levels at "
                f"{header['bits']} bits (k={header['k']})")
    return None


def _valid_k(value: Any) -> bool:
    try:
        check_k(value)
    except ValueError:
        return False
    return True


def load_packed(path: Path, arithmetic: str = "levels") -> tuple[nn.Module, dict]:
    """The model a packed file describes, rebuilt from its codes alone (eval mode; its
    quantized convolutions compute in ``arithmetic``, see ``apot.quant.packed``), and the
    file's header."""
    from .models import build_model

    header, arrays = read_packed(path)
    skeleton = build_model(header["arch"], header["num_classes"], header["bits"],
                           header["scheme"], header["k"], header["first_last"])
    try:
        model = unpack_model(skeleton, arrays, header["layers"], header["scheme"], header["k"],
                             arithmetic)
    except ValueError as exc:
        raise UserError(f"packed file {path}: {exc}; export it again with apot export") from None
    return model, header


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
