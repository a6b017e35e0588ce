"""Models for the export tests (test_packed, test_onnx): a ResNet-20 whose every float part
differs from its initial value, its checkpoint file, and the command line in a subprocess."""
import json
import subprocess
import sys

import safetensors.numpy
import torch

from apot.deploy.packed_file import HEADER_KEY, read_packed
from apot.models import build_model
from apot.quant.schemes import APOT
from apot.storage.checkpoints import save_atomic


def randomized_model(bits, scheme=APOT, k=2, first_last="8bit", seed=0):
    """A ResNet-20 whose every float part differs from its initial value, so that a part the
    packed file failed to carry shows in the outputs."""
    torch.manual_seed(seed)
    model = build_model("resnet20", 10, bits, scheme, k, first_last)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(("running_mean", "bn1.bias", "bn2.bias")) or ".bias" in name:
                tensor.normal_(0, 0.2)
            elif name.endswith("act_quantizer.alpha"):
                tensor.uniform_(1.0, 4.0)
            elif name.endswith("weight_quantizer.alpha"):
                tensor.uniform_(1.5, 3.0)
            elif "bn" in name and name.endswith("weight"):
                tensor.uniform_(0.5, 1.5)
    return model.eval()


def write_checkpoint(tmp_path, bits=4, scheme=APOT):
    model = randomized_model(bits, scheme)
    path = tmp_path / "best.pt"
    description = {"arch": "resnet20", "bits": bits, "scheme": scheme, "k": 2,
                   "first_last": "8bit"}
    save_atomic({"model": description, "state_dict": model.state_dict()}, path)
    return model, path, description


def run_apot(*args):
    return subprocess.run([sys.executable, "-m", "apot", *map(str, args)], capture_output=True,
                          text=True)


INPUT = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))



def rewrite(path, out, edit_header=None, edit_arrays=None):
    header, arrays = read_packed(path)
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    out.write_bytes(safetensors.numpy.save(arrays, metadata={HEADER_KEY: json.dumps(header)}))
    return out
