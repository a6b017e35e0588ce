"""Benchmark: quantized ResNet-20s as ONNX models in ONNX Runtime's CPU provider against float32
(not a test).

Models (the authors' released checkpoints when --authors holds them, else random weights: the
time does not depend on the weights):
  * apot_int8: 4-bit APoT, ``apot export --format onnx`` (qdq form, the projection as a sum of
    uint8 steps), which ONNX Runtime fuses into QLinearConv;
  * apot_gather: the same with the projection as a 256-entry Gather (the other exact form);
  * apot_integer: 4-bit APoT in the integer form (ConvInteger, float epilogue);
  * uniform_int8: 4-bit uniform (the authors' FP32 weights quantized: speed only), qdq form;
  * onnx_fp32: the FP32 model through the same exporter (--onnx-form float);
  * torch_fp32: the same FP32 model in torch.
Each runs a batch of 100 and a batch of 1 of 32x32 images, all models interleaved round by
round in one process, ``--threads`` threads each (ONNX Runtime's intra-op pool, without
spinning between runs so that sessions taking turns do not steal each other's cores; torch's
threads, passive between runs for the same reason); the median per model and batch is its
time. ``--profile`` adds ONNX Runtime's
profile of apot_int8 (time per operator type). The last line is exactly

    apot_int8_fp32_ratio=A uniform_int8_fp32_ratio=U apot_int8_torch_fp32_ratio=T batch1_apot_int8_fp32_ratio=B integer_convs=N

ratios are speedups (float time / int8 time: higher is faster) over ONNX float32 unless named;
integer_convs: apot_int8's convolutions that ONNX Runtime runs on integers.

Usage: python bench/onnx.py [--rounds 20] [--threads 2] [--authors DIR] [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# torch's OpenMP threads spin after each parallel region by default, stealing the cores ONNX
# Runtime's next run needs: make them wait passively (read when torch loads, so set first).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Run as a script, this file's folder comes first on the path and its name would shadow the
# onnx package itself.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import torch

from apot.deploy.onnx_export import FLOAT_FORM, build_onnx
from apot.deploy.onnx_run import OnnxModel
from apot.models import build_model, load_model

AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "data" / "apot-authors-checkpoints"


def quantized(bits: int, scheme: str, authors: Path) -> torch.nn.Module:
    """The authors' {bits}-bit APoT model, or their FP32 weights under ``scheme``; random
    weights when their files are absent."""
    own = authors / f"res20_{bits}bit.pth.tar"
    fp32 = authors / "res20_32bit.pth.tar"
    description = {"arch": "resnet20", "bits": bits, "scheme": scheme}
    if scheme == "apot" and own.is_file():
        return load_model(own, description)[0].eval()
    model = build_model("resnet20", 10, bits, scheme).eval()
    if fp32.is_file():
        state = load_model(fp32, {"arch": "resnet20", "bits": 32})[0].state_dict()
        model.load_state_dict(state, strict=False)  # quantizer thresholds keep their defaults
    return model


def float_model(authors: Path) -> torch.nn.Module:
    fp32 = authors / "res20_32bit.pth.tar"
    if fp32.is_file():
        return load_model(fp32, {"arch": "resnet20", "bits": 32})[0].eval()
    return build_model("resnet20", 10, 32).eval()


def profile(path: Path, threads: int, x: np.ndarray) -> dict[str, float]:
    """ONNX Runtime's own profile of ``path``: milliseconds per batch by operator type (its
    trace file is written beside ``path``, in the bench's temporary folder)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runs = 5
    for _ in range(runs + 1):
        session.run(None, {"images": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    return {op: round(us / 1000 / (runs + 1), 2) for op, us in per_op.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--authors", type=Path, default=AUTHORS)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    apot, uniform, fp32 = (quantized(4, "apot", args.authors), quantized(4, "uniform", args.authors),
                           float_model(args.authors))
    graphs = {"apot_int8": build_onnx(apot, "qdq", 32, {"form": "qdq"}),
              "apot_gather": build_onnx(apot, "qdq", 32, {"form": "qdq"}, projection="gather"),
              "apot_integer": build_onnx(apot, "integer", 32, {"form": "integer"}),
              "uniform_int8": build_onnx(uniform, "qdq", 32, {"form": "qdq"}),
              "onnx_fp32": build_onnx(fp32, FLOAT_FORM, 32, {"form": FLOAT_FORM})}
    batches = {100: torch.randn(100, 3, 32, 32), 1: torch.randn(1, 3, 32, 32)}
    with tempfile.TemporaryDirectory() as folder:
        models = {}
        for name, graph in graphs.items():
            path = Path(folder) / f"{name}.onnx"
            path.write_bytes(graph.SerializeToString())
            models[name] = OnnxModel(path, args.threads, spinning=False)
        if args.profile:
            print("apot_int8 profile (ms per batch of 100 by operator):",
                  profile(Path(folder) / "apot_int8.onnx", args.threads, batches[100].numpy()))
    models["torch_fp32"] = fp32
    times = {(name, n): [] for name in models for n in batches}
    with torch.no_grad():
        for name, model in models.items():  # warm-up: first runs allocate and pick kernels
            for x in batches.values():
                model(x)
        for _ in range(args.rounds):
            for n, x in batches.items():
                repeat = 1 if n == 100 else 20  # a batch of 1 is too short to time alone
                for name, model in models.items():
                    start = time.perf_counter()
                    for _ in range(repeat):
                        model(x)
                    times[(name, n)].append((time.perf_counter() - start) / repeat)
    median = {key: statistics.median(values) for key, values in times.items()}
    for (name, n), seconds in median.items():
        print(f"{name:13s} batch {n:3d}: {seconds * 1000:8.2f} ms ({n / seconds:8.0f} images/s)")
    convs = {name: m.integer_convs for name, m in models.items() if isinstance(m, OnnxModel)}
    print("integer convs after ONNX Runtime's optimization:", convs)

    def speedup(name: str, over: str = "onnx_fp32", n: int = 100) -> float:
        return median[(over, n)] / median[(name, n)]
    print(f"apot_gather_fp32_ratio={speedup('apot_gather'):.2f} "
          f"apot_integer_fp32_ratio={speedup('apot_integer'):.2f}")
    print(f"apot_int8_fp32_ratio={speedup('apot_int8'):.2f} "
          f"uniform_int8_fp32_ratio={speedup('uniform_int8'):.2f} "
          f"apot_int8_torch_fp32_ratio={speedup('apot_int8', 'torch_fp32'):.2f} "
          f"batch1_apot_int8_fp32_ratio={speedup('apot_int8', n=1):.2f} "
          f"integer_convs={convs['apot_int8']}")


if __name__ == "__main__":
    main()
