"""Activation thresholds from data: the least-squared-error alpha on a grid."""
import pytest
import torch

from apot.models import build_model
from apot.quant.calibrate import GRID, best_alpha, calibrate_activation_alphas
from apot.quant.functional import quantize_activation
from apot.quant.modules import ActivationQuantizer


@pytest.mark.parametrize("bits, scheme", [(2, "apot"), (3, "apot"), (4, "uniform"), (4, "pot")])
def test_best_alpha_is_the_grid_point_with_the_least_error(bits, scheme):
    torch.manual_seed(bits)
    x = torch.randn(20_000).relu() * 1.5
    quantizer = ActivationQuantizer(bits, scheme)
    alpha = best_alpha(x, quantizer)
    top = float(x.max())

    def error(a):
        q = quantize_activation(x, torch.tensor(a), quantizer.projector)
        return float((q - x).double().pow(2).sum())
    grid = [top * i / GRID for i in range(1, GRID + 1)]
    assert alpha in grid and error(alpha) == min(error(a) for a in grid)
    # clipping pays: below the maximum of a long-tailed input, and well below the 8.0 init
    assert alpha < top and alpha < 8.0


def test_calibration_sets_only_the_thresholds_and_keeps_the_batches_unquantized():
    torch.manual_seed(0)
    model = build_model("resnet20", bits=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(16, 3, 32, 32), torch.zeros(16, dtype=torch.long))]
    found = calibrate_activation_alphas(model, batches)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {f"{name}.alpha" for name in found} and len(found) == 18 + 2
    assert all(0 < a < 8.0 for a in found.values())
    assert model.training  # the caller's model keeps its mode and running statistics
    assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    # the same batches give the same thresholds
    again = build_model("resnet20", bits=3)
    again.load_state_dict(before)
    assert calibrate_activation_alphas(again, batches) == found
