"""The ``apot`` command line: one subcommand per job, JSON on stdout, one-line errors."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .errors import UserError
from .models import ARCHS, build_model
from .quant.convert import FIRST_LAST_POLICIES, FLOAT_BITS
from .quant.levels import MAX_BITS, MIN_BITS, SCHEMES, levels


def _bits(text: str, allow_float: bool) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits must be an integer, got {text!r}") from None
    if MIN_BITS <= value <= MAX_BITS or (allow_float and value == FLOAT_BITS):
        return value
    extra = f" or {FLOAT_BITS} for float" if allow_float else ""
    raise argparse.ArgumentTypeError(f"bits must be {MIN_BITS}..{MAX_BITS}{extra}, got {value}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _base_bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BITS:
        raise argparse.ArgumentTypeError(f"k must be an integer from 1 to {MAX_BITS}, got {text!r}")
    return value


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available; "
                            "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def cmd_levels(args: argparse.Namespace) -> dict | list:
    values = levels(args.scheme, args.bits, signed=args.signed, k=args.k)
    return [str(v) for v in values] if args.exact else [float(v) for v in values]


def cmd_eval(args: argparse.Namespace) -> dict:
    from .checkpoints import (check_model_meta, extract_state_dict, file_sha256, load_file,
                              load_into_model)
    from .data import read_split
    from .evaluate import evaluate, imagenet_batches, tensor_batches

    device = resolve_device(args.device)
    stored = load_file(args.checkpoint)
    check_model_meta(stored, {"arch": args.arch, "bits": args.bits, "scheme": args.scheme,
                              "k": args.k, "first_last": args.first_last}, str(args.checkpoint))
    state = extract_state_dict(stored, source=str(args.checkpoint))
    start = time.perf_counter()
    _, _, input_size = ARCHS[args.arch]
    if input_size == 32:
        images, labels, classes = read_split(args.data, args.split, limit=args.limit_per_class)
        batches, num_classes = tensor_batches(images, labels, args.batch_size), len(classes)
    else:
        folder = Path(args.data) / args.split
        batches = imagenet_batches(folder, args.batch_size)
        num_classes = len(batches.dataset.classes)
    model = build_model(args.arch, num_classes, args.bits, args.scheme, args.k, args.first_last)
    load_into_model(model, state, source=str(args.checkpoint))
    result = evaluate(model, batches, device)
    return {**result, "arch": args.arch, "bits": args.bits, "scheme": args.scheme, "k": args.k,
            "first_last": args.first_last, "checkpoint": str(args.checkpoint),
            "checkpoint_sha256": file_sha256(args.checkpoint),
            "data": str(args.data), "split": args.split, "device": str(device),
            "seconds": round(time.perf_counter() - start, 2)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apot", description="APoT quantization reproduction.")
    parser.add_argument("--version", action="version", version=f"apot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("levels", help="print a quantizer's normalized level set as JSON")
    p.add_argument("--bits", type=lambda t: _bits(t, False), required=True,
                   help=f"bit-width b ({MIN_BITS}..{MAX_BITS})")
    p.add_argument("--scheme", choices=SCHEMES, default="apot")
    p.add_argument("--signed", action="store_true",
                   help="sign + (b-1) magnitude bits, as the authors' weights (2^b - 1 levels)")
    p.add_argument("--k", type=_base_bits, default=2,
                   help=f"APoT base bit-width, 1..{MAX_BITS} (default 2)")
    p.add_argument("--exact", action="store_true", help="print exact fractions as strings")
    p.set_defaults(run=cmd_levels)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset; prints JSON")
    p.add_argument("--arch", choices=list(ARCHS), required=True)
    p.add_argument("--bits", type=lambda t: _bits(t, True), required=True,
                   help=f"weight/activation bits of the inner layers ({MIN_BITS + 1}..{MAX_BITS}), "
                        f"or {FLOAT_BITS} for the float model")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True,
                   help="image-folder archive (.tar.gz, .tar, .zip) or folder with <split>/<class>/")
    p.add_argument("--scheme", choices=SCHEMES, default="apot")
    p.add_argument("--k", type=_base_bits, default=2, help="APoT base bit-width (default 2)")
    p.add_argument("--first-last", choices=FIRST_LAST_POLICIES, default="8bit",
                   help="first conv / last linear: the authors' 8-bit weights (default) or float")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=_positive, default=100)
    p.add_argument("--limit-per-class", type=_positive, default=None,
                   help="evaluate only the first N images of each class (quick checks)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.set_defaults(run=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "bits", None) == 1 and args.command == "eval":
        parser.error("argument --bits: quantized models need at least 2 bits (signed weights)")
    try:
        result = args.run(args)
    except UserError as exc:
        print(f"apot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
