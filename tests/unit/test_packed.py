"""Packed models: bit packing, the rebuilt layers against the fake-quantized ones, the file
format and its errors (apot.deploy.bitpack, apot.deploy.packed_layers, apot.deploy.packed_file, apot export /
apot eval --packed)."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_builder import INPUT, randomized_model, rewrite, run_apot, write_checkpoint

from apot.deploy import integer
from apot.deploy.bitpack import (pack_codes, packed_size, sign_magnitude, split_sign_magnitude,
                                 unpack_codes)
from apot.deploy.packed_file import export_packed, float32_size, load_packed, read_packed
from apot.deploy.packed_layers import PackedQuantConv2d, pack_model, unpack_model
from apot.errors import UserError
from apot.layout import file_sha256
from apot.models import build_model
from apot.quant.modules import QuantConv2d
from apot.quant.schemes import APOT, MODEL_BITS, POT, UNIFORM, scheme_names


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 16).flatmap(lambda width: st.tuples(
    st.just(width), st.lists(st.integers(0, (1 << width) - 1), max_size=70))))
def test_pack_then_unpack_gives_the_codes_back(width_codes):
    width, codes = width_codes
    packed = pack_codes(np.array(codes, dtype=np.int64), width)
    assert packed.dtype == np.uint8 and packed.size == packed_size(len(codes), width)
    assert unpack_codes(packed, width, len(codes)).tolist() == codes


def test_packing_is_dense_and_least_significant_bit_first():
    assert pack_codes(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert pack_codes(np.array([5, 7, 4]), 3).tolist() == [0b00111101, 0b00000001]
    with pytest.raises(ValueError, match="fit 3 bits"):
        pack_codes(np.array([8]), 3)
    with pytest.raises(ValueError, match="need 2 bytes"):
        unpack_codes(np.zeros(3, np.uint8), 3, 5)


def test_sign_and_magnitude_round_trip_and_zero_has_no_sign():
    negative = np.array([True, False, True, True])
    index = np.array([3, 2, 0, 1])
    codes = sign_magnitude(negative, index, 2)
    assert codes.tolist() == [0b111, 0b010, 0b000, 0b101]
    back_negative, back_index = split_sign_magnitude(codes, 2)
    assert back_index.tolist() == index.tolist()
    assert back_negative.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="0..3"):
        sign_magnitude(negative, np.array([4, 0, 0, 0]), 2)


def rebuilt(model, bits, scheme=APOT, k=2, first_last="8bit", arithmetic="levels"):
    arrays, layers = pack_model(model)
    skeleton = build_model("resnet20", 10, bits, scheme, k, first_last)
    return unpack_model(skeleton, arrays, layers, scheme, k, arithmetic)


@pytest.mark.parametrize("scheme", scheme_names())
@pytest.mark.parametrize("bits", list(MODEL_BITS))
def test_levels_arithmetic_gives_the_fake_quantized_logits_bit_for_bit(scheme, bits):
    model = randomized_model(bits, scheme)
    packed = rebuilt(model, bits, scheme)
    assert not any(isinstance(m, QuantConv2d) for m in packed.modules())
    assert not any(p.numel() for p in packed.parameters() if p.dtype.is_floating_point
                   and p.dim() == 4)  # no float conv weight is left
    with torch.no_grad():
        assert torch.equal(packed(INPUT), model(INPUT))


@pytest.mark.parametrize("scheme", scheme_names())
def test_a_negative_learned_weight_alpha_packs_to_the_same_weights(scheme):
    """Training can drive a weight alpha below 0; the quantizer gives the same weights as with
    |alpha|, and the packed file stores |alpha| (its rule: alpha > 0)."""
    model = randomized_model(2, scheme)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("weight_quantizer.alpha") and "layer1" in name:
                tensor.neg_()
    arrays, _ = pack_model(model)
    assert all((v > 0).all() for k, v in arrays.items() if k.endswith(".weight_alpha"))
    packed = rebuilt(model, 2, scheme)
    with torch.no_grad():
        assert torch.equal(packed(INPUT), model(INPUT))


@pytest.mark.parametrize("scheme,bits", [(APOT, 4), (APOT, 3), (APOT, 2), (UNIFORM, 4),
                                         (POT, 4), (APOT, 8), (UNIFORM, 8)])
def test_integer_arithmetic_sums_exactly_what_the_shift_add_emulation_sums(scheme, bits):
    model = randomized_model(bits, scheme)
    packed = rebuilt(model, bits, scheme, arithmetic="integer")
    conv = model.layer2[0].conv2  # a 32-channel layer: 288 products per sum
    layer = packed.layer2[0].conv2
    assert layer.arithmetic.startswith("integer/")
    x = torch.relu(torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(2))) * 2
    emulated = integer.emulate(conv, x)
    with torch.no_grad():
        acc = torch.nn.functional.conv2d(layer.activation_codes(x), layer.weight, None,
                                         layer.stride, layer.padding)
        assert torch.equal(acc.to(torch.int64), emulated["acc"])
        # scaled once, the layer's output is the float layer's up to float32 rounding
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_integer_arithmetic_uses_float64_or_the_levels_where_sums_are_too_wide():
    pot4 = rebuilt(randomized_model(4, POT), 4, POT, arithmetic="integer")
    assert {m.arithmetic for m in pot4.modules() if isinstance(m, PackedQuantConv2d)} == {
        "integer/float64"}
    pot6 = rebuilt(randomized_model(6, POT), 6, POT, arithmetic="integer")
    assert {m.arithmetic for m in pot6.modules() if isinstance(m, PackedQuantConv2d)} == {
        "levels/float32"}
    with torch.no_grad():
        x = INPUT[:2]
        torch.testing.assert_close(pot4(x), randomized_model(4, POT)(x), rtol=1e-3, atol=1e-3)


def test_float_first_and_last_layers_are_kept_as_float32():
    model = randomized_model(3, first_last="float")
    arrays, layers = pack_model(model)
    assert arrays["conv1.weight"].dtype == np.float32 and "conv1" not in layers
    with torch.no_grad():
        assert torch.equal(rebuilt(model, 3, first_last="float")(INPUT), model(INPUT))


def test_one_corrupted_code_changes_the_logits():
    model = randomized_model(4)
    arrays, layers = pack_model(model)
    arrays["layer3.2.conv2.codes"] = arrays["layer3.2.conv2.codes"].copy()
    arrays["layer3.2.conv2.codes"][0] ^= 0b0111  # the first weight's magnitude index
    packed = unpack_model(build_model("resnet20", 10, 4), arrays, layers, APOT, 2)
    with torch.no_grad():
        assert not torch.equal(packed(INPUT), model(INPUT))


def test_export_writes_a_file_a_fifth_of_the_float_size_and_loads_it_back(tmp_path):
    model, checkpoint, description = write_checkpoint(tmp_path)
    out = tmp_path / "model.safetensors"
    result = export_packed(model, description, 10, checkpoint, out)
    assert result["packed_bytes"] == out.stat().st_size
    assert result["packed_sha256"] == file_sha256(out)  # what the workflow checks the file by
    assert list(result).index("packed_sha256") == list(result).index("packed_bytes") + 1
    assert result["float32_bytes"] == float32_size(model)
    assert out.stat().st_size * 5 <= result["float32_bytes"]
    assert result["quantized_layers"] == 20 and result["quantized_weights"] == sum(
        m.weight.numel() for m in model.modules() if isinstance(m, QuantConv2d))
    header, _ = read_packed(out)
    assert header["source"]["checkpoint"] == "best.pt" and len(header["source"]["sha256"]) == 64
    loaded, header = load_packed(out)
    with torch.no_grad():
        assert torch.equal(loaded(INPUT), model(INPUT))


def _drop_tensor(arrays):
    del arrays["layer1.0.bn1.running_var"]


def _shrink_codes(arrays):
    arrays["layer1.0.conv1.codes"] = arrays["layer1.0.conv1.codes"][:-1]


BAD_HEADERS = {
    "format": (lambda h: h.update(format="other"), "is not an apot-packed header"),
    "version": (lambda h: h.update(version=9), "format version 9"),
    "bits": (lambda h: h.update(bits=32), "header field 'bits'"),
    "levels": (lambda h: h["levels"]["weight"]["codes"].reverse(), "level tables differ"),
    "scheme": (lambda h: h.update(scheme="pot"), "level tables differ"),
    "arch": (lambda h: h.update(arch="resnet32"), "layers are not those of the model"),
    "shape": (lambda h: h["layers"]["fc"].update(shape=[12, 64]), "layer fc has shape"),
    "kind": (lambda h: h["layers"]["fc"].pop("kind"), "header field 'layers'"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_a_wrong_header_is_refused_with_its_cause(tmp_path, case):
    model, checkpoint, description = write_checkpoint(tmp_path)
    good = tmp_path / "good.safetensors"
    export_packed(model, description, 10, checkpoint, good)
    edit, message = BAD_HEADERS[case]
    bad = rewrite(good, tmp_path / "bad.safetensors", edit_header=edit)
    with pytest.raises(UserError, match=message):
        load_packed(bad)


@pytest.mark.parametrize("edit,message", [(_drop_tensor, "lacks tensors of the model"),
                                          (_shrink_codes, "need 1152 bytes, got 1151")])
def test_missing_or_short_tensors_are_refused(tmp_path, edit, message):
    model, checkpoint, description = write_checkpoint(tmp_path)
    good = tmp_path / "good.safetensors"
    export_packed(model, description, 10, checkpoint, good)
    with pytest.raises(UserError, match=message):
        load_packed(rewrite(good, tmp_path / "bad.safetensors", edit_arrays=edit))


def test_cli_export_then_eval_packed_and_its_one_line_errors(tmp_path, synthetic_data):
    model, checkpoint, _ = write_checkpoint(tmp_path)
    out = tmp_path / "m.safetensors"
    done = run_apot("export", "--arch", "resnet20", "--bits", 4, "--checkpoint", checkpoint,
                    "--out", out, "--result", tmp_path / "export.json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads((tmp_path / "export.json").read_text())
    assert printed["packed_bytes"] == out.stat().st_size < printed["float32_bytes"] / 5
    evaluated = {}
    for source in (["--packed", out],
                   ["--checkpoint", checkpoint, "--arch", "resnet20", "--bits", 4]):
        done = run_apot("eval", *source, "--data", synthetic_data, "--device", "cpu")
        assert done.returncode == 0, done.stderr
        evaluated[source[0]] = json.loads(done.stdout)
    assert evaluated["--packed"]["loss"] == evaluated["--checkpoint"]["loss"]
    assert evaluated["--packed"]["layer_arithmetic"] == {"levels/float32": 20}

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(out.read_bytes()[:-100])
    wrong = rewrite(out, tmp_path / "wrong.safetensors",
                    edit_header=lambda h: h.update(num_classes=0))
    for bad, message in [(truncated, "is truncated or not a safetensors file"),
                         (wrong, "header field 'num_classes'"),
                         (checkpoint, "is truncated or not a safetensors file")]:
        done = run_apot("eval", "--packed", bad, "--data", synthetic_data)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    done = run_apot("eval", "--packed", out, "--bits", 4, "--data", synthetic_data)
    assert done.returncode == 2 and "--bits: a packed file names its model" in done.stderr
    done = run_apot("export", "--arch", "resnet20", "--bits", 3, "--checkpoint", checkpoint,
                    "--out", tmp_path / "x.safetensors")
    assert done.returncode == 2 and "bits" in done.stderr
    assert not (tmp_path / "x.safetensors").exists()

