"""Reading and writing checkpoints safely, including the APoT authors' released files.

Files are loaded with ``torch.load(..., weights_only=True)``: a checkpoint holding a pickle
that would run code is refused rather than executed. Writes go to a temporary file in the
same folder and are renamed into place, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from apot.errors import UserError
from apot.layout import write_bytes_atomic

WEIGHT_ALPHA_SUFFIX = ".weight_quantizer.alpha"  # state-dict key endings of the thresholds
ACT_ALPHA_SUFFIX = ".act_quantizer.alpha"
ALPHA_SUFFIXES = (WEIGHT_ALPHA_SUFFIX, ACT_ALPHA_SUFFIX)
# The authors' names for the clipping thresholds -> ours (suffix match on the key).
AUTHORS_KEY_SUFFIXES = {
    ".weight_quant.wgt_alpha": WEIGHT_ALPHA_SUFFIX,
    ".act_alpha": ACT_ALPHA_SUFFIX,
}


def _looks_like_torch_bytes(data: bytes) -> bool:
    """A torch.save file is a zip archive, or (legacy format) starts with a pickle protocol."""
    return zipfile.is_zipfile(io.BytesIO(data)) or (
        len(data) >= 2 and data[0] == 0x80 and data[1] >= 2)


# Pickle opcodes that push a string: STACK_GLOBAL (protocol 4+) takes the last two pushed as
# the module and the name of the global it imports.
_PICKLE_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE",
                                "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})


def _pickle_globals(stream) -> list[str]:
    """The globals (``module.name``) that the pickles in ``stream`` import, in order.

    pickletools only disassembles: nothing is run. A legacy torch.save file is five pickles in
    a row (magic number, protocol, system info, the object, storage keys), then raw tensor
    bytes; the scan ends quietly at the first bytes that are not a pickle.
    """
    found = []
    try:
        for _ in range(5):
            memo, pushed = {}, [None, None]  # pushed: values the pickle put on its stack
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    module, name = pushed[-2:]
                    named = isinstance(module, str) and isinstance(name, str)
                    found.append(f"{module}.{name}" if named
                                 else "a global whose name is computed while loading")
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1]
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = pushed[-1]
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(arg))
                elif op.name not in ("PROTO", "FRAME"):
                    pushed.append(arg if op.name in _PICKLE_STRING_OPS else None)
                del pushed[:-2]  # STACK_GLOBAL needs only the last two
    except ValueError:  # pickletools' error for damaged or non-pickle bytes (and for the end)
        pass
    return found


def _unsafe_global(path: Path) -> str | None:
    """The first global that a checkpoint's pickle imports and torch's weights-only loader does
    not allow; None if there is none or the file is too damaged to tell.

    torch's own error names the global only for pickle protocols 2-3: for protocol 4-5 it
    stops earlier, at an opcode it does not parse ("Unsupported operand 149"), so the pickle
    is read here instead.
    """
    from torch import _weights_only_unpickler as unpickler  # torch's list of safe globals

    allowed = set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
                if not pickles:
                    return None
                with archive.open(pickles[0]) as stream:
                    found = _pickle_globals(stream)
        else:
            with path.open("rb") as stream:
                found = _pickle_globals(stream)
    except (OSError, EOFError, zipfile.BadZipFile):
        return None
    return next((name for name in found if name not in allowed), None)


def load_file(path: str | os.PathLike) -> Any:
    """The object stored in a checkpoint file, loaded on the CPU without running code."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist (check the path)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file (give the checkpoint file itself)")
    corrupt = (f"checkpoint {path} is corrupt or not a PyTorch checkpoint (an HTML page or a "
               f"Git LFS pointer instead of the file?); download or copy it again")
    # Read here, not by torch: a failing read (a network file system, a bad disk) is then an
    # OSError naming the file, which is not confused with damaged content.
    data = path.read_bytes()
    if not _looks_like_torch_bytes(data):
        raise UserError(corrupt)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message differs between formats and protocols: the pickle itself says
        # whether it asked for code (refused) or is only damaged (corrupt)
        unsafe = _unsafe_global(path)
        if unsafe is None:
            raise UserError(f"{corrupt} [unreadable pickle]") from None
        raise UserError(
            f"checkpoint {path} was refused: it asks to load {unsafe}, which is not a "
            f"tensor or plain container, and loading it could run code. Re-save its state "
            f"dict from a trusted environment.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
            IndexError) as exc:
        raise UserError(f"{corrupt} [{type(exc).__name__}]") from None


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint object, in this package's key names.

    Accepts a bare state dict or a dict holding one under ``state_dict`` or ``model``; strips
    the ``module.`` prefix of ``nn.DataParallel`` and renames the authors' threshold keys.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj)
            or not all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise UserError(f"{source} holds no model state dict (expected a mapping of tensors, "
                        f"or one under 'state_dict' or 'model')")
    state = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")
        for theirs, ours in AUTHORS_KEY_SUFFIXES.items():
            if key.endswith(theirs):
                key = key[: -len(theirs)] + ours
        state[key] = value
    return state


MODEL_META_KEY = "model"  # {"arch", "bits", "scheme", "k", "first_last"} in our checkpoints
MODEL_META_FIELDS = ("arch", "bits", "scheme", "k", "first_last")


def check_model_meta(obj: Any, expected: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Raise a UserError if a checkpoint records a model description that differs from ours.

    Our checkpoints store ``{"model": {"arch": ..., "bits": ..., ...}}`` beside the state dict;
    bits and scheme leave no trace in tensor names or shapes, so this is the only way to catch
    a 4-bit checkpoint evaluated as 3-bit. The authors' files carry no description: nothing
    is checked for them.
    """
    meta = obj.get(MODEL_META_KEY) if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return
    wrong = [f"{key}={meta[key]!r} (asked for {expected[key]!r})" for key in MODEL_META_FIELDS
             if key in meta and key in expected and meta[key] != expected[key]]
    if wrong:
        raise UserError(f"{source} was made for another model: " + ", ".join(wrong)
                        + "; pass the settings it was trained with")


def restore_model(model: nn.Module, stored: Any, description: Mapping[str, Any],
                  progressive: bool = False, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Load the checkpoint object ``stored`` into ``model``: its own model description is
    checked against ``description`` (the keys given: arch, bits, scheme, k, first_last), its
    state dict is found (extract_state_dict) and copied in (load_into_model). Returns that
    state dict. Every way a checkpoint becomes a model goes through here."""
    check_model_meta(stored, description, source)
    state = extract_state_dict(stored, source)
    load_into_model(model, state, progressive=progressive, source=source)
    return state


def load_into_model(model: nn.Module, state: Mapping[str, torch.Tensor],
                    progressive: bool = False, source: str = "checkpoint") -> None:
    """Copy ``state`` into ``model``, or raise a UserError that names the mismatch.

    ``progressive=True`` allows the clipping thresholds to be missing (a float checkpoint
    initializing a quantized model: they keep their initial values) or surplus (a quantized
    checkpoint initializing a float model); every other tensor must match in name and shape.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if progressive:
        missing = [k for k in missing if not k.endswith(ALPHA_SUFFIXES)]
        unexpected = [k for k in unexpected if not k.endswith(ALPHA_SUFFIXES)]
    problems = []
    if any(k.endswith(ALPHA_SUFFIXES) for k in missing):
        problems.append("it has no clipping thresholds, so it is a float model: evaluate it "
                        "with --bits 32, or use it as a progressive initialization")
    elif any(k.endswith(ALPHA_SUFFIXES) for k in unexpected):
        problems.append("it has clipping thresholds, so it is a quantized model: pass the "
                        "--bits it was trained with")
    if missing:
        problems.append(f"{len(missing)} missing tensors (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if shapes:
        problems.append(f"{len(shapes)} tensors of the wrong shape (first: {shapes[0]}); "
                        f"check --arch and the number of classes")
    if problems:
        raise UserError(f"{source} does not match the model: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically (write_bytes_atomic). The bytes are made in
    memory first: a failing write is then Python's OSError naming its cause (no space left,
    ...), not torch's opaque stream error."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getbuffer())
