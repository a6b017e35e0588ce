"""ONNX export (apot.deploy.onnx_export) and running it (apot.deploy.onnx_run, apot export --format onnx,
apot eval --onnx): the integers in the graph, both forms against the fake-quantized model, the
integer kernels ONNX Runtime runs, refusals and hostile files."""
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_builder import randomized_model, run_apot, write_checkpoint
from onnx import TensorProto, helper, numpy_helper

from apot.cli import main
from apot.deploy.bitpack import split_sign_magnitude, unpack_codes
from apot.deploy.integer import activation_codes, shift_add_conv2d, weight_terms
from apot.deploy.onnx_export import (FLOAT_FORM, FORMS, IDENTITY_CONV, Exporter, Graph,
                                     build_onnx, folded_bn, lookup_table, qdq_activation_factor,
                                     qdq_weight_factor, write_onnx)
from apot.deploy.onnx_run import OnnxModel, read_onnx
from apot.deploy.packed_layers import code_table, pack_model
from apot.errors import UserError
from apot.quant.modules import QuantConv2d
from apot.quant.schemes import APOT, POT, UNIFORM

IMAGES = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
QUANTIZED_CONVS = 20   # ResNet-20: 18 in the blocks, 2 shortcut projections
FITTING = [(APOT, 2), (APOT, 3), (APOT, 4), (APOT, 5), (UNIFORM, 2), (UNIFORM, 4), (POT, 3)]


def quantized_convs(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantConv2d)]


def session(onnx_model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def logits(onnx_model, images=IMAGES) -> np.ndarray:
    return session(onnx_model).run(["logits"], {"images": images.numpy()})[0]


@pytest.fixture(scope="module")
def apot4():
    return randomized_model(4, APOT)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scheme,bits", [(APOT, 4), (UNIFORM, 3)])
def test_weights_are_the_packed_files_integers(form, scheme, bits):
    model = randomized_model(bits, scheme)
    graph = build_onnx(model, form, 32, {})
    onnx.checker.check_model(graph, full_check=True)
    stored = {t.name.rsplit("_", 1)[0]: numpy_helper.to_array(t) for t in graph.graph.initializer}
    arrays, _ = pack_model(model)
    table = code_table(scheme, bits - 1, 2)
    for name, layer in quantized_convs(model):
        packed = unpack_codes(arrays[f"{name}.codes"], bits, layer.weight.numel())
        negative, index = split_sign_magnitude(packed, bits - 1)
        codes = np.asarray(table.codes)[index] * np.where(negative, -1, 1)
        weights = stored[f"{name}.w"]
        assert weights.dtype == np.int8 and weights.shape == tuple(layer.weight.shape)
        sign = 1
        if form == "qdq":  # times a common factor; channels with a negative batch-norm scale
            # are stored negated
            sign = np.where(folded_bn(model.get_submodule(name.replace("conv", "bn")
                                                          .replace("downsample.0",
                                                                   "downsample.1")),
                                      layer.out_channels)[0] < 0, -1, 1)[:, None, None, None]
            sign = sign * qdq_weight_factor(table.divisor)
        assert np.array_equal(weights, (codes.reshape(weights.shape) * sign).astype(np.int8))


@pytest.mark.parametrize("scheme,bits", FITTING)
def test_the_projection_gives_the_checkpoints_level_codes(scheme, bits):
    """Both qdq projections of the 256 grid values equal the lookup table, which holds the
    projection's own levels as codes; the integer form's codes equal the torch quantizer's."""
    model = randomized_model(bits, scheme)
    name, layer = quantized_convs(model)[3]
    table = lookup_table(layer)
    codes = set(code_table(scheme, bits, 2).codes)
    assert set(table.tolist()) <= codes and table[0] == 0 and table[255] == max(codes)
    grid = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    factor = qdq_activation_factor(max(codes))  # the qdq form's codes: times this factor
    for projection in ("steps", "gather"):
        exporter = Exporter(model, "qdq", projection=projection)
        out = exporter.lookup("grid", layer)
        assert np.array_equal(run_piece(exporter.g, "grid", TensorProto.UINT8, grid, out),
                              table.reshape(grid.shape).astype(np.int64) * factor)
    x = torch.relu(torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(4))) * 3
    exporter = Exporter(model, "integer")
    out = exporter.codes_from_float("x", name, layer)
    expected, _ = activation_codes(layer, x)
    got = run_piece(exporter.g, "x", TensorProto.FLOAT, x.numpy(), out)
    assert got.dtype == np.uint8 and np.array_equal(got, expected.numpy())


def run_piece(graph: Graph, name: str, kind: int, value: np.ndarray, out: str) -> np.ndarray:
    model = helper.make_model(
        helper.make_graph(graph.nodes, "piece", [helper.make_tensor_value_info(name, kind,
                                                                                 value.shape)],
                          [helper.make_tensor_value_info(out, TensorProto.UINT8, None)],
                          graph.initializers),
        opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return session(model).run([out], {name: value})[0]


@pytest.mark.parametrize("scheme,bits", [(APOT, 4), (APOT, 2), (UNIFORM, 3), (POT, 3)])
def test_the_integer_form_gives_the_fake_quantized_logits(scheme, bits):
    """Exact integer sums against the fake-quantized model's float32 sums: an activation
    within float rounding of a level threshold can land on the other level, and the image's
    logits then move a little; every other image's logits agree to float32 rounding."""
    model = randomized_model(bits, scheme)
    images = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(images).numpy()
    got = logits(build_onnx(model, "integer", 32, {}), images)
    close = np.abs(got - expected).max(axis=1) <= 1e-4 * np.abs(expected).max()
    assert close.sum() >= 28, close
    assert (got.argmax(1) == expected.argmax(1)).sum() >= 30


def test_the_integer_form_sums_the_codes_exactly_as_shifts_and_adds(apot4):
    """The first ConvInteger's int32 output is the shift-and-add sum of its input codes with
    the layer's weight terms (apot.deploy.integer): the accumulation is exact."""
    graph = build_onnx(apot4, "integer", 32, {})
    conv = next(n for n in graph.graph.node if n.op_type == "ConvInteger")
    for name in (conv.input[0], conv.output[0]):
        graph.graph.output.append(helper.make_empty_tensor_value_info(name))
    codes, acc = session(graph).run([conv.input[0], conv.output[0]],
                                    {"images": IMAGES.numpy()})
    layer = apot4.layer1[0].conv1
    sign, shifts, present, _, _ = weight_terms(layer)
    expected = shift_add_conv2d(torch.from_numpy(codes.astype(np.int64)), sign, shifts, present,
                                layer.stride[0], layer.padding[0])
    assert acc.dtype == np.int32 and np.array_equal(acc, expected.numpy())


def with_measured_batch_norm(model):
    """``model`` with batch-norm statistics measured on IMAGES, as training leaves them: the
    qdq form takes its 8-bit output ranges from them."""
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        model.train()(IMAGES)
    return model.eval()


@pytest.mark.parametrize("bits", [4, 2])
def test_the_qdq_form_is_close_and_the_float_form_is_the_unquantized_network(bits):
    """8-bit requantization moves the qdq form's logits a little; the float form (activations
    not quantized, no QuantizeLinear, no ConvInteger) moves them much more."""
    model = with_measured_batch_norm(randomized_model(bits, APOT))
    with torch.no_grad():
        expected = model(IMAGES).numpy()
    float_graph = build_onnx(model, FLOAT_FORM, 32, {})
    assert not any(n.op_type in ("QuantizeLinear", "ConvInteger") for n in float_graph.graph.node)
    qdq_error = np.abs(logits(build_onnx(model, "qdq", 32, {})) - expected).mean()
    float_error = np.abs(logits(float_graph) - expected).mean()
    assert 0 < qdq_error < 0.5 * float_error, (qdq_error, float_error)


@pytest.mark.parametrize("bits", [2, 4])
def test_the_qdq_bias_is_batch_norms_shift_to_within_half_an_output_step(bits):
    """The int32 bias comes in units of input scale x weight scale; with the bare codes a unit
    is a whole 2-bit weight level, dozens of output grid steps (alpha / 255 of the quantizer
    the output feeds). The weights' common factor makes it fine enough."""
    model = randomized_model(bits, APOT)
    graph = build_onnx(model, "qdq", 32, {})
    values = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    made_by = {n.output[0]: n for n in graph.graph.node}
    checked = 0
    for node in graph.graph.node:
        prefix = node.name.rsplit(".conv_", 1)[0]
        if node.op_type != "Conv" or not prefix.endswith(".conv1"):
            continue
        block = model.get_submodule(prefix.rsplit(".", 1)[0])
        bias = made_by[node.input[2]]
        dequantized = values[bias.input[0]] * values[bias.input[1]].astype(np.float64)
        shift = folded_bn(block.bn1, block.conv1.out_channels)[1]
        step = float(block.conv2.act_quantizer.alpha.detach()) / 255
        assert np.abs(dequantized - shift).max() < 0.5 * step, prefix
        checked += 1
    assert checked == 9


def test_onnx_runtime_runs_every_quantized_conv_on_integers(apot4, tmp_path):
    """Every quantized conv runs on integers; in the qdq form so do the residual additions
    (one per block) and the requantizations of the residual stream to the next quantizers'
    grids (one per block and shortcut projection): ONNX Runtime fuses them into QLinearAdd
    only when their scales are scalars, so a (1,)-shaped scale shows here."""
    counts, models = {}, {}
    for form in (*FORMS, FLOAT_FORM):
        path = tmp_path / f"{form}.onnx"
        write_onnx(build_onnx(apot4, form, 32, {"form": form}), path)
        models[form] = OnnxModel(path, threads=1)
        counts[form] = models[form].integer_convs
    assert counts == {"qdq": QUANTIZED_CONVS, "integer": QUANTIZED_CONVS, FLOAT_FORM: 0}
    blocks, projections = 9, 2
    assert models["qdq"].optimized_ops.get("QLinearAdd") == 2 * blocks + projections
    # the stream's identity conv runs on integers too (left out of integer_convs), and with it
    # the runtime keeps the stream channels-last: a transpose into it and one out before the
    # pooling, where without it each first-stage integer conv had its own (nine in all)
    assert models["qdq"].optimized_ops.get("QLinearConv") == QUANTIZED_CONVS + 1
    assert models["qdq"].optimized_ops.get("Transpose", 0) <= 2


def test_the_streams_identity_conv_changes_no_code(apot4):
    """The qdq form's 1x1 identity conv at the start of the residual stream gives out exactly
    the uint8 codes it gets, on ONNX Runtime's integer kernel."""
    graph = build_onnx(apot4, "qdq", 32, {})
    nodes = {out: node for node in graph.graph.node for out in node.output}
    conv = next(n for n in graph.graph.node if n.name.startswith(IDENTITY_CONV))
    stream_in = nodes[conv.input[0]].input[0]                # the DequantizeLinear's input
    stream_out = next(n for n in graph.graph.node if conv.output[0] in n.input).output[0]
    graph.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.UINT8, None)
                              for name in (stream_in, stream_out))
    before, after = session(graph).run([stream_in, stream_out], {"images": IMAGES.numpy()})
    assert before.shape == after.shape == (len(IMAGES), 16, 32, 32)
    assert 0 < before.max() <= 255 and np.array_equal(before, after)


@pytest.mark.parametrize("scheme,bits,layer,needs", [
    (POT, 4, "layer1.0.conv1", "activations need integers up to 16384"),
    (APOT, 6, "layer1.0.conv1", "activations need integers up to 448"),
    (POT, 5, "layer1.0.conv1", "weights need integers up to 16384")])
def test_level_sets_beyond_8_bit_integers_are_refused(scheme, bits, layer, needs):
    with pytest.raises(UserError, match=f"layer {layer}: .*{needs}"):
        build_onnx(randomized_model(bits, scheme), "qdq", 32, {})


def test_export_then_eval_and_hostile_files_end_in_one_line(tmp_path, synthetic_data, capsys):
    model, checkpoint, _ = write_checkpoint(tmp_path)
    out = tmp_path / "m.onnx"
    done = run_apot("export", "--format", "onnx", "--arch", "resnet20", "--bits", 4,
                    "--checkpoint", checkpoint, "--out", out, "--verify-data", synthetic_data,
                    "--threads", 1)
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    assert exported["onnx_form"] == "qdq" and exported["onnx_bytes"] == out.stat().st_size
    verify = exported["verify"]
    assert verify["integer_convs"] == QUANTIZED_CONVS and verify["n"] == 80
    assert verify["images_per_s"] > 0 and verify["float32_images_per_s"] > 0
    done = run_apot("eval", "--onnx", out, "--data", synthetic_data, "--threads", 1)
    assert done.returncode == 0, done.stderr
    evaluated = json.loads(done.stdout)
    for field in ("top1", "top5", "n", "images_per_s", "integer_convs"):
        assert field in evaluated
    assert evaluated["integer_convs"] == QUANTIZED_CONVS and evaluated["bits"] == 4
    assert evaluated["top1"] == pytest.approx(verify["onnx_top1"])

    foreign = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["images"], ["logits"])], "other",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 32, 32])]))
    renamed = onnx.load(out)
    renamed.graph.input[0].name = "pixels"
    for node in renamed.graph.node:
        node.input[:] = ["pixels" if i == "images" else i for i in node.input]
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 1000)
    cases = [(truncated, "not a readable ONNX model"), (garbage, "not a readable ONNX model"),
             (save(foreign, tmp_path / "foreign.onnx"), "apot export did not write"),
             (save(renamed, tmp_path / "renamed.onnx"), "no 'images' input"),
             (tmp_path / "missing.onnx", "no such ONNX file"), (checkpoint, "not a readable")]
    for bad, message in cases[:2]:  # the command line: exit 2, one line
        done = run_apot("eval", "--onnx", bad, "--data", synthetic_data)
        assert done.returncode == 2 and message in done.stderr, (bad, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    for bad, message in cases[2:]:  # the same path in-process
        with pytest.raises(UserError, match=message):
            read_onnx(bad)
    for arguments, message in [
            (["eval", "--onnx", out, "--bits", "4", "--data", synthetic_data],
             "--bits: an ONNX file names its model"),
            (["export", "--arch", "resnet20", "--bits", "4", "--checkpoint", checkpoint,
              "--onnx-form", "integer", "--out", tmp_path / "x.onnx"],
             "--onnx-form applies to --format onnx")]:
        assert main([str(a) for a in arguments]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def save(model, path):
    path.write_bytes(model.SerializeToString())
    return path


def test_read_onnx_refuses_weights_kept_outside_the_file(apot4, tmp_path):
    graph = build_onnx(apot4, "qdq", 32, {"form": "qdq"})
    onnx.save(graph, tmp_path / "outside.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    with pytest.raises(UserError, match="keeps its data outside the file"):
        read_onnx(tmp_path / "outside.onnx")


def test_the_integer_range_rule_is_the_one_the_workflow_and_the_exporter_apply():
    """The workflow exports exactly the runs whose level sets fit (apot.quant.schemes), and the
    exporter refuses the others with the same words."""
    from apot.quant.schemes import integer_range_problem
    fits = {(s, b): integer_range_problem(s, b) is None
            for s in (APOT, POT, UNIFORM) for b in range(2, 9)}
    assert [b for b in range(2, 9) if fits[(POT, b)]] == [2, 3]
    assert [b for b in range(2, 9) if fits[(APOT, b)]] == [2, 3, 4, 5]
    assert all(fits[(UNIFORM, b)] for b in range(2, 9))
    with pytest.raises(UserError, match=re.escape(integer_range_problem(POT, 4))):
        build_onnx(randomized_model(4, POT), "integer", 32, {})
