"""Model registry, CIFAR ResNet layout, float -> quantized conversion and progressive init."""
import pytest
import torch
from torch import nn

from apot.errors import UserError
from apot.models import ARCHS, build_model
from apot.quant.convert import quantize_model
from apot.quant.modules import (ACT_ALPHA_INIT, WGT_ALPHA_INIT, EightBitConv2d, EightBitLinear,
                                QuantConv2d)
from apot.storage.checkpoints import load_into_model

RESNET20_FLOAT_PARAMS = 272_474  # the authors' res20_32bit checkpoint


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def alpha_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if n.endswith(".alpha")}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- build / forward

@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_builds_in_float_and_gives_logits(arch):
    model = build_model(arch, first_last="float").eval()
    _, num_classes, input_size = ARCHS[arch]
    size = 64 if input_size == 224 else input_size
    assert not any(isinstance(m, (QuantConv2d, EightBitConv2d, EightBitLinear))
                   for m in model.modules())
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


def test_build_model_num_classes_and_unknown_arch():
    assert build_model("resnet20", num_classes=100, first_last="float").fc.out_features == 100
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("resnet99")


# --------------------------------------------------------------------------- parameter counts

def test_resnet20_float_parameter_count_matches_authors():
    assert n_params(build_model("resnet20", first_last="float")) == RESNET20_FLOAT_PARAMS
    # the authors' float baseline (8-bit first/last) has no extra parameters
    assert n_params(build_model("resnet20", bits=32)) == RESNET20_FLOAT_PARAMS


def test_resnet20_4bit_adds_one_act_and_one_weight_alpha_per_quantized_conv():
    model = build_model("resnet20", bits=4)
    assert n_params(model) == RESNET20_FLOAT_PARAMS + 40
    alphas = alpha_params(model)
    assert len(alphas) == 40
    assert sum(n.endswith("act_quantizer.alpha") for n in alphas) == 20
    assert sum(n.endswith("weight_quantizer.alpha") for n in alphas) == 20
    assert all(p.dim() == 0 for p in alphas.values())


def test_resnet56_is_larger_with_nine_blocks_per_stage():
    r20 = build_model("resnet20", first_last="float")
    r56 = build_model("resnet56", first_last="float")
    assert n_params(r56) > n_params(r20)
    for stage in (r56.layer1, r56.layer2, r56.layer3):
        assert len(stage) == 9
    for stage in (r20.layer1, r20.layer2, r20.layer3):
        assert len(stage) == 3


# --------------------------------------------------------------------------- state_dict layout

def test_resnet20_state_dict_keys_match_authors_layout():
    sd = build_model("resnet20", first_last="float").state_dict()
    assert sd["conv1.weight"].shape == (16, 3, 3, 3)
    for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert f"bn1.{suffix}" in sd
    for stage in (1, 2, 3):
        for block in range(3):
            prefix = f"layer{stage}.{block}."
            for name in ("conv1.weight", "conv2.weight", "bn1.weight", "bn1.bias",
                         "bn1.running_mean", "bn2.weight", "bn2.running_var"):
                assert prefix + name in sd, prefix + name
    assert sd["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
    assert "layer2.0.downsample.1.running_mean" in sd
    assert sd["layer3.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert sd["fc.weight"].shape == (10, 64)
    assert sd["fc.bias"].shape == (10,)
    assert not any(k.startswith("layer1.") and "downsample" in k for k in sd)
    downsample_keys = {k.split(".downsample")[0] for k in sd if "downsample" in k}
    assert downsample_keys == {"layer2.0", "layer3.0"}
    # every key is either top-level conv1/bn1/fc or inside a layer
    assert all(k.split(".")[0] in {"conv1", "bn1", "fc", "layer1", "layer2", "layer3"}
               for k in sd)


# --------------------------------------------------------------------------- quantize_model

def _convs(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_quantize_resnet20_replaces_layers_and_keeps_weights():
    model = build_model("resnet20", first_last="float")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conv_names = list(_convs(model))
    assert len(conv_names) == 21
    out = quantize_model(model, bits=4)
    assert out is model
    assert type(model.conv1) is EightBitConv2d
    assert type(model.fc) is EightBitLinear
    quant = [n for n, m in model.named_modules() if isinstance(m, QuantConv2d)]
    assert len(quant) == 20
    assert set(quant) == set(conv_names) - {"conv1"}
    assert "layer2.0.downsample.0" in quant and "layer3.0.downsample.0" in quant
    # no plain float Conv2d / Linear left
    assert all(type(m) in (QuantConv2d, EightBitConv2d) for m in _convs(model).values())
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert set(after) - set(before) == set(alpha_params(model))


def test_quantize_resnet18_replaces_all_convs_but_the_first():
    model = build_model("resnet18", first_last="float")
    conv_names = list(_convs(model))
    downsample = [n for n in conv_names if "downsample" in n]
    assert len(downsample) == 3
    weight = model.layer4[1].conv2.weight.detach().clone()
    quantize_model(model, bits=3)
    quant = {n for n, m in model.named_modules() if isinstance(m, QuantConv2d)}
    assert quant == set(conv_names) - {"conv1"}
    assert set(downsample) <= quant
    assert type(model.conv1) is EightBitConv2d and type(model.fc) is EightBitLinear
    assert model.layer4[1].conv2.bits == 3
    assert torch.equal(model.layer4[1].conv2.weight, weight)


def test_bits32_with_8bit_first_last_only_swaps_first_and_last():
    model = build_model("resnet20", bits=32, first_last="8bit")
    assert type(model.conv1) is EightBitConv2d
    assert type(model.fc) is EightBitLinear
    assert not any(isinstance(m, QuantConv2d) for m in model.modules())
    assert type(model.layer1[0].conv1) is nn.Conv2d
    assert type(model.layer2[0].downsample[0]) is nn.Conv2d
    assert alpha_params(model) == {}


def test_quantize_respects_scheme_bits_and_alpha_init():
    model = build_model("resnet20", bits=3, scheme="pot", act_alpha=5.0, wgt_alpha=2.0)
    q = model.layer1[0].conv1
    assert q.bits == 3
    assert q.weight_quantizer.scheme == "pot" and q.act_quantizer.scheme == "pot"
    assert q.act_quantizer.alpha.item() == 5.0
    assert q.weight_quantizer.alpha.item() == 2.0


def test_converting_an_already_quantized_model_raises():
    model = build_model("resnet20", bits=4)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, bits=3)
    eight_only = build_model("resnet20", bits=32, first_last="8bit")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(eight_only, bits=4)


def test_quantize_rejects_bad_arguments():
    with pytest.raises(ValueError):
        quantize_model(build_model("resnet20", first_last="float"), bits=9)
    with pytest.raises(ValueError, match="first_last"):
        quantize_model(build_model("resnet20", first_last="float"), bits=4, first_last="16bit")


# --------------------------------------------------------------------------- progressive init

def test_progressive_init_from_float_keeps_alpha_inits_and_copies_weights():
    float_model = build_model("resnet20", first_last="float")
    with torch.no_grad():  # make BN statistics non-default so copying is observable
        float_model.bn1.running_mean.uniform_(-1, 1)
    state = float_model.state_dict()
    model = build_model("resnet20", bits=4)
    load_into_model(model, state, progressive=True)
    alphas = alpha_params(model)
    assert len(alphas) == 40
    for name, p in alphas.items():
        expected = ACT_ALPHA_INIT if "act_quantizer" in name else WGT_ALPHA_INIT
        assert p.item() == expected, name
    assert ACT_ALPHA_INIT == 8.0 and WGT_ALPHA_INIT == 3.0
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert torch.equal(model.layer3[2].conv2.weight, float_model.layer3[2].conv2.weight)
    assert torch.equal(model.conv1.weight, float_model.conv1.weight)


def test_float_state_into_quantized_model_without_progressive_raises():
    state = build_model("resnet20", first_last="float").state_dict()
    model = build_model("resnet20", bits=4)
    with pytest.raises(UserError, match="float model"):
        load_into_model(model, state)


def test_progressive_4bit_to_3bit_copies_everything_including_alphas():
    model4 = build_model("resnet20", bits=4)
    with torch.no_grad():
        for i, p in enumerate(alpha_params(model4).values()):
            p.fill_(1.0 + 0.01 * i)
    state = model4.state_dict()
    model3 = build_model("resnet20", bits=3)
    assert set(model3.state_dict()) == set(state)
    load_into_model(model3, state)
    assert model3.layer1[0].conv1.bits == 3
    loaded = model3.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    alpha = model3.layer3[2].conv2.weight_quantizer.alpha
    assert alpha.item() == state["layer3.2.conv2.weight_quantizer.alpha"].item() != WGT_ALPHA_INIT


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("scheme", ["apot", "pot", "uniform"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_quantized_forward_backward_gives_gradients_everywhere(bits, scheme):
    model = build_model("resnet20", bits=bits, scheme=scheme).train()
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 3, 5, 9])
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, y).backward()
    alphas = alpha_params(model)
    assert len(alphas) == 40
    for name, p in alphas.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().item() > 0, name
    convs = _convs(model)
    assert len(convs) == 21
    for name, conv in convs.items():
        grad = conv.weight.grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum().item() > 0, name
    assert model.fc.weight.grad.abs().sum().item() > 0


def test_load_model_takes_the_checkpoints_classes_or_names_the_mismatch(tmp_path):
    """One way from a checkpoint to a model (apot eval, apot cost): the model it describes, with
    the number of classes its last layer has unless the data says otherwise."""
    from apot.models import load_model

    path = tmp_path / "cifar100.pt"
    torch.save({"state_dict": build_model("resnet20", 100, bits=4).state_dict(),
                "model": {"arch": "resnet20", "bits": 4}}, path)
    model, stored = load_model(path, {"arch": "resnet20", "bits": 4})
    assert model.fc.out_features == 100 and stored["model"]["bits"] == 4
    again, _ = load_model(path, {"arch": "resnet20", "bits": 4}, num_classes=100)
    assert again.fc.out_features == 100
    with pytest.raises(UserError, match="was trained for 100 classes; the data has 10"):
        load_model(path, {"arch": "resnet20", "bits": 4}, num_classes=10)
    with pytest.raises(UserError, match=r"made for another model: bits=4 \(asked for 3\)"):
        load_model(path, {"arch": "resnet20", "bits": 3})
