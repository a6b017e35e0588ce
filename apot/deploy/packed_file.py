"""Packed model files: written by ``apot export``, read by ``apot eval --packed``.

A packed file is a safetensors file (no pickle: reading it runs no code). Its tensors are
``apot.deploy.packed_layers.pack_model``'s arrays: per quantized conv "<layer>.codes" (uint8, the
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

A packed file may come from anyone, so ``read_packed`` trusts none of it: it parses the
safetensors header itself (bounded in size and nesting), checks the apot header's every field
and layer record, every tensor's dtype and shape against the records and the records against
the model the header describes (built on the meta device: shapes, no memory), all before any
tensor data is read; then the values that must be finite or positive. Each refusal is one
UserError naming the file, the problem and the fix.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from apot.deploy.bitpack import packed_size
from apot.deploy.packed_layers import (ACT_ALPHA, CODES, EIGHT_BIT_LINEAR, LAYER_KINDS, QUANT_CONV,
                                       SCALE, WEIGHT_ALPHA, code_table, float_parts,
                                       layer_array_keys, pack_model, packable_layers, unpack_model)
from apot.errors import UserError, first_line
from apot.layout import file_sha256, write_bytes_atomic
from apot.models import DESCRIPTION_FIELDS
from apot.quant.convert import FIRST_LAST_POLICIES
from apot.quant.levels import MAX_BITS, check_k
from apot.quant.schemes import MODEL_BITS, scheme_names

FORMAT, VERSION = "apot-packed", 1
HEADER_KEY = "apot_header"
FIX = "export it again with apot export"

# Bounds on what a reader parses, checked before parsing. The safetensors header of a real
# packed file is under 100 kB (resnet50: 373 tensors) and its apot header a few kB. Python's
# json takes up to ~27 bytes of memory per byte of input ("[{},{},...]"); with torch's import
# already ~700 MB resident, 4 MiB keeps a hostile header's parse near 100 MB.
MAX_SAFETENSORS_HEADER_BYTES = 4 << 20
MAX_APOT_HEADER_BYTES = 1 << 20
# Python's json recurses once per level (200,000 levels: RecursionError); a real safetensors
# header nests 3 levels, an apot header 4.
MAX_JSON_DEPTH = 8
# ImageNet-21k, the largest common image-classification label set, has 21,841 classes: a cap
# above it refuses no real model, and bounds the model a header makes the reader build
# (resnet50's last layer at 25,000 classes is 205 MB of float32; at 10^9, 8 TB).
MAX_CLASSES = 25_000
MAX_DIMS = 8  # a weight has 4 dimensions (conv) or 2 (linear), a packed code array 1
# The tensor dtypes a packed file holds (safetensors' names; the format is little-endian):
# U8 packed codes of quantized convs, I8/I16 codes of 8-bit layers, F32 everything else.
SAFETENSORS_DTYPES = {"U8": np.dtype("<u1"), "I8": np.dtype("<i1"), "I16": np.dtype("<i2"),
                      "F32": np.dtype("<f4")}
EIGHT_BIT_CODE_DTYPES = ("I8", "I16")


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
    if num_classes > MAX_CLASSES:  # a reader would refuse the file
        raise UserError(f"apot export packs models of at most {MAX_CLASSES} classes; this one "
                        f"has {num_classes}")
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
            "out": str(out), "packed_bytes": packed_bytes,
            "packed_sha256": hashlib.sha256(data).hexdigest(), "float32_bytes": float_bytes,
            "size_ratio": round(packed_bytes / float_bytes, 4),
            "quantized_layers": sum(r["kind"] == QUANT_CONV for r in layers.values()),
            "quantized_weights": sum(int(np.prod(r["shape"])) for r in layers.values()
                                     if r["kind"] == QUANT_CONV)}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: its dtype name ("F32", ...), its shape, and its
    bytes [begin, end), counted from the first byte after the header."""
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_packed(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a packed file; UserError naming the problem if it is not one.

    Everything the headers say is checked before any tensor data is read (see the module
    docstring), so memory stays bounded by the model the header describes.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"packed file {path} does not exist or is not a file (check the path)")
    metadata, entries, data_start = read_safetensors_header(path)
    header = apot_header(path, metadata)
    problem = tensors_problem(header["layers"], entries) or layout_problem(header, entries)
    if problem is None:
        arrays = read_tensors(path, entries, data_start)
        problem = values_problem(header["layers"], arrays)
    if problem:
        raise refusal(path, problem)
    return header, arrays


def refusal(path: Path, problem: str) -> UserError:
    """The one-line error for a packed file with ``problem``. Names from the file are shown
    escaped and the problem shortened, so a hostile file cannot print many lines."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in problem)
    if len(text) > 300:
        text = text[:300] + "..."
    return UserError(f"packed file {path}: {text}; {FIX}")


def not_safetensors(path: Path, detail: str) -> UserError:
    return refusal(path, f"it is truncated or not a safetensors file ({detail})")


def read_safetensors_header(path: Path) -> tuple[dict[str, str], dict[str, TensorEntry], int]:
    """(metadata, tensor entries by key, byte offset of the tensor data) of a safetensors file,
    parsed here rather than by the safetensors library so that nothing unbounded is read.

    The file starts with the header's length in bytes (little-endian u64), then the header
    (JSON), then the tensors' bytes, which the entries must tile exactly.
    """
    with open(path, "rb") as file:
        size = file.seek(0, 2)
        file.seek(0)
        if size < 8:
            raise not_safetensors(path, f"{size} bytes, less than the 8 of a header's length")
        length = int.from_bytes(file.read(8), "little")
        if length > MAX_SAFETENSORS_HEADER_BYTES:
            raise not_safetensors(path, f"its first 8 bytes give a header of {length} bytes, "
                                        f"over the {MAX_SAFETENSORS_HEADER_BYTES} bytes a "
                                        f"packed file's header can need")
        if 8 + length > size:
            raise not_safetensors(path, f"its first 8 bytes give a header of {length} bytes, "
                                        f"the file holds {size - 8} after them")
        raw = file.read(length)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise not_safetensors(path, "its header is not UTF-8 text") from None
    header = parse_json(text)
    if isinstance(header, str):
        raise not_safetensors(path, f"its header {header}")
    if not isinstance(header, dict):
        raise not_safetensors(path, "its header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise not_safetensors(path, "its __metadata__ is not an object of strings")
    entries = {}
    for key, value in header.items():
        entry = tensor_entry(value)
        if entry is None:
            raise not_safetensors(path, f"tensor {key}'s entry is not a dtype, a shape of at "
                                        f"most {MAX_DIMS} sizes and two data_offsets")
        entries[key] = entry
    problem = tiling_problem(entries, size - 8 - length)
    if problem:
        raise not_safetensors(path, problem)
    return metadata, entries, 8 + length


def parse_json(text: str) -> Any:
    """The value of JSON ``text``, or a str saying why it is not one: deeper than
    MAX_JSON_DEPTH (checked first: the parser would recurse once per level) or not JSON."""
    if nesting_exceeds(text, MAX_JSON_DEPTH):
        return f"nests deeper than {MAX_JSON_DEPTH} levels"
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
        return f"is not JSON ({first_line(exc)})"


# A JSON string (escapes skipped whole; an unterminated one runs to the end, so no input
# makes the scan quadratic), or one bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays and objects more than ``limit`` levels deep: one
    linear scan that counts brackets outside strings, without parsing."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def tensor_entry(value: Any) -> TensorEntry | None:
    """The TensorEntry of one header entry {"dtype", "shape", "data_offsets"}, or None if it
    is not one (the dtype's name is checked later, with the apot header's records)."""
    if not isinstance(value, dict):
        return None
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str) or not is_shape(shape):
        return None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets))
            and 0 <= offsets[0] <= offsets[1]):
        return None
    return TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])


def tiling_problem(entries: dict[str, TensorEntry], data_bytes: int) -> str | None:
    """Whether the tensors' byte ranges tile the ``data_bytes`` after the header exactly, as
    safetensors requires: no range past the end (a truncated file), no gap, no overlap."""
    ranges = sorted((entry.begin, entry.end, key) for key, entry in entries.items())
    end = max((stop for _, stop, _ in ranges), default=0)
    if end > data_bytes:
        return f"its tensors end at data byte {end}, the file holds {data_bytes}"
    position = 0
    for begin, stop, key in ranges:
        if begin != position:
            return f"tensor {key}'s data_offsets start at {begin}, not at {position}"
        position = stop
    if position != data_bytes:
        return f"{data_bytes - position} bytes follow its last tensor"
    return None


def apot_header(path: Path, metadata: dict[str, str]) -> dict:
    """The checked apot header of a safetensors file's metadata."""
    if HEADER_KEY not in metadata:
        raise UserError(f"packed file {path} has no apot header: it is a safetensors file, but "
                        f"not one apot export wrote; {FIX}")
    text = metadata[HEADER_KEY]
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_APOT_HEADER_BYTES:
        raise refusal(path, f"its apot header is {size} bytes, over the "
                            f"{MAX_APOT_HEADER_BYTES} bytes a header can need")
    header = parse_json(text)
    if isinstance(header, str):
        raise refusal(path, f"its apot header {header}")
    problem = header_problem(header)
    if problem:
        raise refusal(path, problem)
    return header


def header_problem(header: Any) -> str | None:
    """What is wrong with a packed file's apot header (parsed JSON), or None: every field's
    type and value, the level tables, the layer records."""
    from apot.models import ARCHS

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return f"its header is not an {FORMAT} header"
    if not is_int(header.get("version")) or header["version"] != VERSION:
        return (f"format version {_short(header.get('version'))}; this apot reads version "
                f"{VERSION}")
    # field -> (check, what it must be); isinstance first: a list or dict is unhashable
    checks = {
        "arch": (lambda v: isinstance(v, str) and v in ARCHS, f"one of {', '.join(ARCHS)}"),
        "bits": (lambda v: is_int(v) and v in MODEL_BITS,
                 f"an integer from {MODEL_BITS.start} to {MODEL_BITS.stop - 1}"),
        "scheme": (lambda v: isinstance(v, str) and v in scheme_names(),
                   f"one of {', '.join(scheme_names())}"),
        "k": (_valid_k, f"an integer from 1 to {MAX_BITS}"),
        "first_last": (lambda v: isinstance(v, str) and v in FIRST_LAST_POLICIES,
                       f"one of {', '.join(FIRST_LAST_POLICIES)}"),
        "num_classes": (lambda v: is_int(v) and 1 <= v <= MAX_CLASSES,
                        f"an integer from 1 to {MAX_CLASSES}"),
        "layers": (lambda v: isinstance(v, dict) and len(v) > 0, "an object of layer records"),
    }
    for field, (valid, must) in checks.items():
        if field not in header or not valid(header[field]):
            return (f"header field {field!r} is missing or invalid "
                    f"({_short(header.get(field))}): it must be {must}")
    expected = level_tables(header["bits"], header["scheme"], header["k"])
    if header.get("levels") != expected:
        return (f"its level tables differ from this apot's {header['scheme']} levels at "
                f"{header['bits']} bits (k={header['k']})")
    return records_problem(header["layers"], header["bits"]) or classes_problem(header)


def records_problem(layers: dict, bits: int) -> str | None:
    """The first layer record that is not {"kind": a known kind, "shape": a short list of
    non-negative integers, "width": ``bits``, an integer (quantized convs only)}."""
    for name, record in layers.items():
        where = f"header field 'layers': layer {name}"
        if not isinstance(record, dict):
            return f"{where} is {_short(record)}, not a record"
        kind = record.get("kind")
        if not isinstance(kind, str) or kind not in LAYER_KINDS:
            return f"{where} has kind {_short(kind)}; kinds are {', '.join(LAYER_KINDS)}"
        if not is_shape(record.get("shape")):
            return (f"{where} has shape {_short(record.get('shape'))}; a shape is a list of at "
                    f"most {MAX_DIMS} non-negative integers")
        width = record.get("width")
        if kind == QUANT_CONV and (not is_int(width) or width != bits):
            return (f"{where} has width {_short(width)}; the quantized convs of a {bits}-bit "
                    f"model have width {bits}, an integer")
    return None


def classes_problem(header: dict) -> str | None:
    """num_classes against the outputs of the 8-bit last layer (first_last="8bit"; a float
    last layer's shape is checked against the model in ``layout_problem``)."""
    for name, record in header["layers"].items():
        if record["kind"] == EIGHT_BIT_LINEAR:
            outputs = record["shape"][0] if record["shape"] else None
            if outputs != header["num_classes"]:
                return (f"layer {name} has shape {record['shape']}: {outputs} outputs, but "
                        f"header field 'num_classes' is {header['num_classes']}")
    return None


def tensors_problem(layers: dict, entries: dict[str, TensorEntry]) -> str | None:
    """Every tensor's dtype and byte size, and each layer's tensors against its record, from
    the safetensors header alone."""
    for key, entry in entries.items():
        if entry.dtype not in SAFETENSORS_DTYPES:
            return (f"tensor {key} has dtype {entry.dtype}; a packed file holds only "
                    f"{', '.join(SAFETENSORS_DTYPES)} tensors")
        size = math.prod(entry.shape) * SAFETENSORS_DTYPES[entry.dtype].itemsize
        if size != entry.end - entry.begin:
            return (f"tensor {key} of shape {list(entry.shape)} and dtype {entry.dtype} is "
                    f"{size} bytes, its data_offsets span {entry.end - entry.begin}")
    owned = set()
    for name, record in layers.items():
        problem = layer_tensors_problem(name, record, entries)
        if problem:
            return problem
        owned.update(layer_array_keys(name, record["kind"]))
    for key, entry in entries.items():
        if key not in owned and entry.dtype != "F32":
            return (f"tensor {key} is {entry.dtype}; float parts (batch-norm, biases, float "
                    f"layers) must be F32")
    return None


def layer_tensors_problem(name: str, record: dict, entries: dict[str, TensorEntry]) -> str | None:
    """One packed layer's tensors against its record: a quantized conv's codes are U8 of
    ceil(weights * width / 8) bytes, an 8-bit layer's I8 or I16 of its weight's shape; the
    alphas and the 8-bit scale one F32 value each."""
    missing = [key for key in layer_array_keys(name, record["kind"]) if key not in entries]
    if missing:
        return f"it has no tensor {missing[0]} (layer {name} is a {record['kind']})"
    codes = entries[f"{name}.{CODES}"]
    if record["kind"] == QUANT_CONV:
        count, width = math.prod(record["shape"]), record["width"]
        if codes.dtype != "U8":
            return f"tensor {name}.{CODES} is {codes.dtype}; a quantized conv's codes are U8"
        if codes.shape != (packed_size(count, width),):
            return (f"tensor {name}.{CODES} has shape {list(codes.shape)}: {count} codes of "
                    f"{width} bits need {packed_size(count, width)} bytes, got "
                    f"{math.prod(codes.shape)}")
        scalars = (WEIGHT_ALPHA, ACT_ALPHA)
    else:
        if codes.dtype not in EIGHT_BIT_CODE_DTYPES:
            return (f"tensor {name}.{CODES} is {codes.dtype}; an 8-bit layer's codes are "
                    f"{' or '.join(EIGHT_BIT_CODE_DTYPES)}")
        if list(codes.shape) != record["shape"]:
            return (f"tensor {name}.{CODES} has shape {list(codes.shape)}, its layer record "
                    f"{record['shape']}")
        scalars = (SCALE,)
    for suffix in scalars:
        entry = entries[f"{name}.{suffix}"]
        if entry.dtype != "F32" or entry.shape != (1,):
            return (f"tensor {name}.{suffix} is {entry.dtype} of shape {list(entry.shape)}; "
                    f"it must be one F32 value")
    return None


def layout_problem(header: dict, entries: dict[str, TensorEntry]) -> str | None:
    """The layer records and float parts against the model the header describes: its packed
    layers' kinds and weight shapes, its float parts' names and shapes."""
    model = model_layout(header)
    layers = header["layers"]
    expected = dict(packable_layers(model))
    if {name: record["kind"] for name, record in layers.items()} != expected:
        name = sorted(set(layers) ^ set(expected)
                      or {n for n in layers if layers[n]["kind"] != expected[n]})[0]
        return (f"its layers are not those of the model its header describes: layer {name} is "
                f"{layers[name]['kind'] if name in layers else 'absent'} in the file, "
                f"{expected.get(name, 'absent')} in a {header['arch']} model")
    for name, record in layers.items():
        shape = list(model.get_submodule(name).weight.shape)
        if record["shape"] != shape:
            return f"layer {name} has shape {record['shape']}, the model {shape}"
    owned = {key for name, record in layers.items()
             for key in layer_array_keys(name, record["kind"])}
    floats = {key: list(value.shape) for key, value in float_parts(model).items()}
    missing = sorted(floats.keys() - entries.keys())
    if missing:
        return f"it lacks tensors of the model: {_listing(missing)}"
    extra = sorted(entries.keys() - floats.keys() - owned)
    if extra:
        return f"it has tensors the model does not: {_listing(extra)}"
    for key, shape in floats.items():
        if list(entries[key].shape) != shape:
            return f"tensor {key} has shape {list(entries[key].shape)}, the model {shape}"
    return None


def model_layout(header: dict) -> nn.Module:
    """The model a checked header describes, on the meta device: its layers and shapes without
    memory for its weights, whatever num_classes says."""
    from apot.models import build_model

    with torch.device("meta"):
        return build_model(header["arch"], header["num_classes"], header["bits"],
                           header["scheme"], header["k"], header["first_last"])


def read_tensors(path: Path, entries: dict[str, TensorEntry],
                 data_start: int) -> dict[str, np.ndarray]:
    """The arrays of checked ``entries``, read from ``path``'s data (at byte ``data_start``)."""
    arrays = {}
    with open(path, "rb") as file:
        for key, entry in entries.items():
            buffer = bytearray(entry.end - entry.begin)  # writable: torch takes it as is
            file.seek(data_start + entry.begin)
            if file.readinto(buffer) != len(buffer):
                raise not_safetensors(path, f"tensor {key}'s data ends early")
            dtype = SAFETENSORS_DTYPES[entry.dtype]
            # the file is little-endian; the model wants native arrays (no copy on x86, ARM)
            native = np.frombuffer(buffer, dtype).astype(dtype.newbyteorder("="), copy=False)
            arrays[key] = native.reshape(entry.shape)
    return arrays


def values_problem(layers: dict, arrays: dict[str, np.ndarray]) -> str | None:
    """Values the model cannot compute with: an alpha (clipping threshold) not finite and
    > 0, an 8-bit scale max(w) not finite and non-zero, a float part not finite, a batch-norm
    running_var below 0."""
    owned = set()
    for name, record in layers.items():
        owned.update(layer_array_keys(name, record["kind"]))
        if record["kind"] == QUANT_CONV:
            for key in (f"{name}.{WEIGHT_ALPHA}", f"{name}.{ACT_ALPHA}"):
                value = float(arrays[key][0])
                if not (math.isfinite(value) and value > 0):
                    return (f"tensor {key} is {value!r}; a clipping threshold (alpha) must be "
                            f"finite and > 0")
        else:
            key = f"{name}.{SCALE}"
            value = float(arrays[key][0])
            if not (math.isfinite(value) and value != 0):
                return (f"tensor {key} is {value!r}; an 8-bit scale max(w) must be finite and "
                        f"non-zero")
    for key, value in arrays.items():
        if key in owned:
            continue
        finite = np.isfinite(value)
        if not finite.all():
            return (f"tensor {key} holds {float(value[~finite][0])!r}; batch-norm values, biases "
                    f"and float weights must be finite")
        if key.endswith("running_var") and value.size and value.min() < 0:
            return (f"tensor {key} holds {float(value.min())!r}; a batch-norm running_var (a "
                    f"variance) must be >= 0")
    return None


def is_int(value: Any) -> bool:
    """An integer, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_shape(value: Any) -> bool:
    """A list of at most MAX_DIMS non-negative integers."""
    return (isinstance(value, list) and len(value) <= MAX_DIMS
            and all(is_int(size) and size >= 0 for size in value))


def _short(value: Any) -> str:
    """repr of a value from a file, shortened (a hostile header's values can be megabytes)."""
    return reprlib.repr(value)


def _listing(keys: list[str], count: int = 5) -> str:
    more = f" and {len(keys) - count} more" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def _valid_k(value: Any) -> bool:
    try:
        check_k(value)
    except ValueError:
        return False
    return True


def load_packed(path: Path, arithmetic: str = "levels") -> tuple[nn.Module, dict]:
    """The model a packed file describes, rebuilt from its codes alone (eval mode; its
    quantized convolutions compute in ``arithmetic``, see ``apot.deploy.packed_layers``), and the
    file's header."""
    from apot.models import build_model

    header, arrays = read_packed(path)
    skeleton = build_model(header["arch"], header["num_classes"], header["bits"],
                           header["scheme"], header["k"], header["first_last"])
    try:
        model = unpack_model(skeleton, arrays, header["layers"], header["scheme"], header["k"],
                             arithmetic)
    except ValueError as exc:
        raise refusal(path, str(exc)) from None
    return model, header
