"""Cost model: level codes, MAC counts, FixOPs against the paper, integer emulation."""
import json
from collections import Counter
from fractions import Fraction

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from apot.cli import main
from apot.deploy.cost import (cost_tables, count_layers, mac_cost, multiply_table, network_cost,
                              weight_usage)
from apot.deploy.integer import activation_codes, emulate, shift_add_conv2d, weight_terms
from apot.models import ARCHS, build_model
from apot.quant.schemes import level_codes, magnitude_levels, mean_terms, scheme_names

SCHEMES = scheme_names()
from apot.quant.modules import QuantConv2d

# Term counts of the authors' APoT sets (shared/paper/apot-facts.md, section 2).
APOT_TERM_COUNTS = {2: {0: 1, 1: 3}, 3: {0: 1, 1: 4, 2: 3}, 4: {0: 1, 1: 6, 2: 9},
                    5: {0: 1, 1: 7, 2: 15, 3: 9}, 6: {0: 1, 1: 9, 2: 27, 3: 27}}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", range(1, 7))
def test_level_codes_are_the_levels_as_integers_made_of_their_shifts(scheme, bits):
    codes = level_codes(scheme, bits)
    top = codes[-1].code
    assert [c.level for c in codes] == list(magnitude_levels(scheme, bits))
    for c in codes:
        assert Fraction(c.code, top) == c.level
        assert c.code == sum(1 << s for s in c.shifts)
        assert len(set(c.shifts)) == len(c.shifts)


@pytest.mark.parametrize("bits", sorted(APOT_TERM_COUNTS))
def test_apot_term_counts_are_the_papers(bits):
    assert Counter(c.terms for c in level_codes("apot", bits)) == APOT_TERM_COUNTS[bits]


def test_mean_terms_of_uniform_codes_is_half_the_bits():
    for bits in range(1, 7):
        assert mean_terms("uniform", bits) == pytest.approx(bits / 2)
    assert mean_terms("apot", 4, usage=[1] + [0] * 15) == 0  # only zero used


def torch_flop_count_macs(model, input_size):
    """MACs of Conv2d/Linear by torch's own FLOP counter (2 FLOPs per MAC): independent of
    our hooks."""
    counter = FlopCounterMode(display=False)
    model.eval()
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("arch", ["resnet20", "resnet56", "resnet18", "resnet50"])
def test_mac_counts_equal_torch_flop_counter(arch):
    model = build_model(arch, first_last="float")
    layers, _ = count_layers(model, ARCHS[arch][2])
    assert sum(layer.macs for layer in layers) == torch_flop_count_macs(model, ARCHS[arch][2])


def test_resnet18_figures_of_the_paper():
    fp = network_cost("resnet18", 32, first_last="8bit")
    assert fp["macs"] == 1_814_073_344
    # The paper prints 1.82G: conv/linear MACs plus batch-norm/ReLU/pooling operations.
    assert round((fp["macs"] + fp["elementwise_ops"]) / 1e9, 2) == 1.82
    uniform5 = network_cost("resnet18", 5, "uniform")
    uniform3 = network_cost("resnet18", 3, "uniform")
    assert abs(uniform5["fixops"] / 1e6 - 781) < 1
    assert abs(uniform3["fixops"] / 1e6 - 357) < 1
    # 19 quantized convs (1x1 downsamples included) and the 8-bit stem and classifier
    layers = [row for row in uniform5["layers"] if row["kind"] == "quantized"]
    assert len(layers) == 19 and uniform5["multiplies"] == 118_525_952


def test_apot_fixops_follow_the_term_ratio_rule():
    apot5, uniform5 = network_cost("resnet18", 5, "apot"), network_cost("resnet18", 5, "uniform")
    quantized = uniform5["fixops"] - uniform5["multiplies"]
    assert apot5["fixops"] == pytest.approx(uniform5["multiplies"] + 0.75 * quantized, abs=1)
    assert abs(apot5["fixops"] / 1e6 - 616) < 1  # the paper's 616M
    assert abs(network_cost("resnet18", 3, "apot")["fixops"] / 1e6 - 298) < 1


def test_mac_cost_ratios_and_counts():
    assert mac_cost("uniform", 4, 4)["fixops"] == 16 / 64
    assert mac_cost("apot", 5, 5)["term_ratio"] == pytest.approx(0.75)
    assert mac_cost("apot", 4, 4)["term_ratio"] == pytest.approx(1.25 / 1.5)
    assert mac_cost("apot", 2, 2)["term_ratio"] == 1  # ternary weights in every scheme
    cost = mac_cost("apot", 5, 5)
    ints, codes = cost["integer_activation"], cost["code_activation"]
    assert ints["shifts_worst"] == 2 and ints["shifts_expected"] == pytest.approx(1.5)
    assert ints["adds_worst"] == 2  # one to combine the two terms, one to accumulate
    assert codes["shifts_worst"] == 2 * 3  # 5-bit activation codes have up to 3 terms
    assert codes["shifts_expected"] == pytest.approx(1.5 * 2.0)  # independent means


def test_multiply_table_gives_two_at_even_bit_widths():
    rows = {r["bits"]: r for r in multiply_table()}
    assert [rows[b]["worst_ratio"] for b in (2, 4, 6)] == [2, 2, 2]
    assert rows[5]["apot_worst"] == 3 and rows[5]["uniform_worst"] == 5
    assert rows[4]["uniform_adds_worst"] == 3 and rows[4]["apot_adds_worst"] == 1


def test_resnet50_reduction_is_computed_from_its_layers():
    apot4, uniform4 = network_cost("resnet50", 4, "apot"), network_cost("resnet50", 4, "uniform")
    quantized = uniform4["fixops"] - uniform4["multiplies"]
    expected = 1 - (uniform4["multiplies"] + quantized * 1.25 / 1.5) / uniform4["fixops"]
    assert 1 - apot4["fixops"] / uniform4["fixops"] == pytest.approx(expected, abs=1e-6)


def test_weight_usage_counts_every_weight_and_changes_expected_counts():
    torch.manual_seed(0)
    model = build_model("resnet20", bits=4)
    conv = model.layer1[0].conv1
    usage = weight_usage(conv)
    assert sum(usage) == conv.weight.numel() and len(usage) == 8
    equal = network_cost("resnet20", 4)
    trained = network_cost("resnet20", 4, model=model)
    assert trained["weight_usage"] == "checkpoint"
    assert trained["shifts"]["worst"] == equal["shifts"]["worst"]
    assert trained["shifts"]["expected"] != equal["shifts"]["expected"]
    assert trained["fixops"] == equal["fixops"]  # FixOPs compare level sets, not models


def test_cost_tables_cover_study_and_paper_configurations():
    tables = cost_tables([("resnet20", 32), ("resnet20", 4)])
    assert {(r["arch"], r["bits"], r["scheme"]) for r in tables["study"]} == {
        ("resnet20", 32, "apot"), ("resnet20", 4, "apot"), ("resnet20", 4, "pot"),
        ("resnet20", 4, "uniform")}
    assert ("resnet50", 4, "apot") in {(r["arch"], r["bits"], r["scheme"]) for r in tables["paper"]}
    assert "layers" not in tables["study"][0]
    assert "FixOPs" in tables["accounting"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_integer_emulation_equals_the_quantized_convolution(scheme, bits, stride):
    torch.manual_seed(bits * 10 + stride)
    layer = QuantConv2d(6, 5, 3, stride=stride, padding=1, bits=bits, scheme=scheme,
                        act_alpha=2.5, wgt_alpha=2.0)
    x = (torch.randn(2, 6, 9, 9) * 2).relu()
    result = emulate(layer, x)
    assert result["equals_integer_conv"]
    assert result["max_relative_error"] < 1e-6
    assert result["acc"].abs().max() > 0


def test_integer_emulation_detects_a_wrong_term():
    torch.manual_seed(0)
    layer = QuantConv2d(4, 3, 3, padding=1, bits=4, act_alpha=2.0)
    x = (torch.randn(1, 4, 6, 6) * 2).relu()
    codes, _ = activation_codes(layer, x)
    sign, shifts, present, w_codes, _ = weight_terms(layer)
    good = shift_add_conv2d(codes, sign, shifts, present, 1, 1)
    exact = torch.nn.functional.conv2d(codes.double(), w_codes.double(), padding=1)
    assert torch.equal(good.double(), exact)
    position = tuple(int(i) for i in present.nonzero()[0])
    shifts[position] += 1
    assert not torch.equal(shift_add_conv2d(codes, sign, shifts, present, 1, 1), good)


def test_cli_cost_prints_one_json_object(capsys):
    assert main(["cost", "--arch", "resnet20", "--bits", "4", "--scheme", "uniform"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["macs"] == 40_813_184 and out["fixops"] == pytest.approx(
        out["multiplies"] + out["quantized_macs"] * 16 / 64, abs=1)
    assert set(out["shifts"]) == {"worst", "expected"} and "adds" in out
    assert "layers" not in out


def test_cli_cost_with_a_checkpoint_and_a_wrong_one(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("resnet20", bits=4)
    torch.save({"model": {"arch": "resnet20", "bits": 4}, "state_dict": model.state_dict()},
               tmp_path / "best.pt")
    assert main(["cost", "--arch", "resnet20", "--bits", "4", "--layers",
                 "--checkpoint", str(tmp_path / "best.pt")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weight_usage"] == "checkpoint"
    assert out["layers"][1]["weight_usage"] == weight_usage(model.layer1[0].conv1)
    assert main(["cost", "--arch", "resnet20", "--bits", "3",
                 "--checkpoint", str(tmp_path / "best.pt")]) == 2
    assert "bits=4" in capsys.readouterr().err
