"""Quantization: grids, straight-through estimator, both training regimes, deploy, packed export."""
from collections import OrderedDict

import pyglove as pg
import pytest
import torch
from torch import nn

from automl import adapters, quant
from automl.adapters import merge_adapters
from automl.errors import SearchSpaceError
from automl.quant import Quantization, QuantLinear

INT_BITS = (8, 4, 2)
ALL_BITS = (16, 8, 4, 2, 1.58)


def mlp(width: int = 32, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(16, width), act1=nn.ReLU(), fc2=nn.Linear(width, width),
                                     act2=nn.ReLU(), head=nn.Linear(width, 5)))


def grid_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``w / scale`` checked to be integers (exactly), as integers."""
    ratio = w / scale
    assert torch.equal(ratio, ratio.round()), "weight is not an integer multiple of its scale"
    return ratio.round()


# ---- grids -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["mean", "median"])
def test_ternary_takes_three_values_times_its_scale(rule):
    w = torch.randn(24, 40)
    q = Quantization(bits=1.58, scale_rule=rule).grid().quantize(w)
    magnitude = w.abs()
    gamma = magnitude.mean() if rule == "mean" else magnitude.flatten().sort().values[(w.numel() - 1) // 2]
    gamma = gamma.to(torch.bfloat16).float()
    expected = torch.clamp(torch.round(w / gamma), -1, 1) * gamma      # BitNet b1.58, Eq. 1-3
    assert torch.equal(q, expected)
    assert set(q.unique().tolist()) == {-gamma.item(), 0.0, gamma.item()}


def test_ternary_per_group_scale():
    w = torch.randn(4, 32)
    q = Quantization(bits=1.58, group_size=8).grid().quantize(w)
    for row in range(4):
        for g in range(4):
            block = q[row, 8 * g: 8 * (g + 1)]
            gamma = w[row, 8 * g: 8 * (g + 1)].abs().mean().to(torch.bfloat16).float()
            assert set(block.unique().tolist()) <= {-gamma.item(), 0.0, gamma.item()}


@pytest.mark.parametrize("bits", INT_BITS)
@pytest.mark.parametrize("group_size", [None, 8])
def test_int_codes_lie_in_range_and_match_torch_fake_quantize(bits, group_size):
    w = torch.randn(12, 32) * 0.1
    grid = Quantization(bits=bits, group_size=group_size).grid()
    codes, scales = grid.encode(w)
    qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    assert codes.min() >= qmin and codes.max() <= qmax
    q = grid.quantize(w)
    # independent check: PyTorch's per-channel fake quantization with the same (bf16) scales
    blocks = w.reshape(-1, group_size) if group_size else w
    s = scales.reshape(-1).float()
    expected = torch.fake_quantize_per_channel_affine(blocks, s, torch.zeros_like(s, dtype=torch.int32),
                                                      0, qmin, qmax).reshape(w.shape)
    assert torch.allclose(q, expected, atol=1e-7, rtol=0)
    # absmax scale: the largest weight of each block sits on ±qmax
    amax = (w.reshape(-1, group_size) if group_size else w).abs().amax(1)
    assert torch.allclose(s, amax / qmax, rtol=2 ** -8)
    assert (codes.reshape(len(s), -1).abs().amax(1) == qmax).all()


def test_bf16_is_a_round_trip():
    w = torch.randn(8, 8)
    assert torch.equal(Quantization(bits=16).grid().quantize(w), w.to(torch.bfloat16).float())


def test_activation_quantization_per_token_8_bits():
    x = torch.randn(5, 64)
    q = quant.quantize_activations(x, 8)
    scale = x.abs().amax(-1, keepdim=True) / 127
    codes = q / scale
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().abs().max() <= 128
    assert (q - x).abs().max() <= scale.max() / 2 + 1e-6
    x.requires_grad_(True)
    quant.quantize_activations(x, 8).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))       # straight-through


# ---- training regimes --------------------------------------------------------------------------

def test_qat_straight_through_loss_decreases():
    torch.manual_seed(0)
    model = mlp()
    adapters.FullFineTune().apply(model)
    Quantization(bits=1.58).apply(model)
    assert all(isinstance(model.get_submodule(n), QuantLinear) for n in ("fc1", "fc2", "head"))
    x, y = torch.randn(64, 16), torch.randint(5, (64,))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert model.fc1.weight.grad.abs().sum() > 0             # gradients reach the latent weights
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # the forward used ternary weights, the latent weights stay float
    assert model.fc2.weight.unique().numel() > 3
    assert model.fc2.grid.quantize(model.fc2.weight).unique().numel() <= 3


@pytest.mark.parametrize("bits", [8, 1.58])
def test_ste_gradient_is_the_gradient_at_the_quantized_weight(bits):
    linear = nn.Linear(8, 4)
    model = nn.Sequential(linear)
    adapters.FullFineTune().apply(model)
    Quantization(bits=bits).apply(model)
    x = torch.randn(6, 8)
    model(x).square().sum().backward()
    wq = model[0].grid.quantize(linear.weight).requires_grad_(True)   # the weight the forward used
    nn.functional.linear(x, wq, linear.bias.detach()).square().sum().backward()
    assert torch.allclose(linear.weight.grad, wq.grad, atol=1e-6)


def test_qat_deploy_keeps_the_trained_function_and_plain_state_dict_keys():
    model = mlp()
    adapters.FullFineTune().apply(model)
    q = Quantization(bits=4, group_size=8)
    q.apply(model)
    keys = list(model.state_dict())
    x = torch.randn(10, 16)
    with torch.no_grad():
        before = model(x)
    q.deploy(merge_adapters(model))
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    assert list(model.state_dict()) == keys == list(mlp().state_dict())
    assert torch.equal(model(x), before)


def test_qlora_regime_quantizes_the_frozen_base_once_and_trains_the_adapter():
    model = mlp()
    adapters.LoRA(rank=2, targets=("fc1", "fc2")).apply(model)
    q = Quantization(bits=4)
    q.apply(model)
    grid = q.grid()
    for layer in (model.fc1.base, model.fc2.base, model.head):    # adapted bases and the frozen head
        assert grid.encode_exact(layer.weight) is not None
        assert not layer.weight.requires_grad and not isinstance(layer, QuantLinear)
    base_before = model.fc1.base.weight.clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(32, 16), torch.randint(5, (32,))
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.fc1.base.weight, base_before)
    assert model.fc1.lora_A.dtype == torch.float32 and model.fc1.lora_B.abs().sum() > 0


def test_merging_lora_into_4bit_base_then_deploy_requantizes():
    model = mlp()
    adapters.LoRA(rank=2).apply(model)
    q = Quantization(bits=4)
    q.apply(model)
    with torch.no_grad():
        model.fc2.lora_B.normal_()                                 # a trained, non-zero update
    merged_fp = model.fc2.merged_weight().detach().clone()
    merge_adapters(model)
    assert q.grid().encode_exact(model.fc2.weight) is None        # the merge left float values
    q.deploy(model)
    for name in ("fc1", "fc2", "head"):
        w = model.get_submodule(name).weight
        scale = w.abs().amax(1, keepdim=True) / 7
        codes = grid_codes(w, scale)
        assert codes.min() >= -8 and codes.max() <= 7 and codes.unique().numel() <= 16
    assert not torch.equal(model.fc2.weight, merged_fp)
    assert torch.equal(model.fc2.weight, q.grid().quantize(merged_fp))


def test_deploy_twice_changes_nothing_even_for_ternary():
    model = mlp()
    adapters.LoRA(rank=2, targets=("fc1",)).apply(model)
    q = Quantization(bits=1.58)
    q.apply(model)
    frozen = model.fc2.weight.clone()
    merge_adapters(model)
    q.deploy(model)
    assert torch.equal(model.fc2.weight, frozen)                  # the mean rule would shrink its scale
    state = {k: v.clone() for k, v in model.state_dict().items()}
    q.deploy(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_deploy_refuses_unmerged_adapters():
    model = mlp()
    adapters.LoRA(rank=2).apply(model)
    with pytest.raises(quant.QuantizationError, match="merge_adapters"):
        Quantization(bits=8).deploy(model)


def test_activation_hooks_installed_once_and_kept_at_deploy():
    model = mlp()
    adapters.LoRA(rank=2, targets=("fc1",)).apply(model)
    q = Quantization(bits=8, activations=8)
    q.apply(model)
    x = torch.randn(4, 16) * 3
    seen = {}
    model.fc2.register_forward_hook(lambda m, args, out: seen.update(fc2=args[0]))
    model(x)
    merge_adapters(model)
    q.deploy(model)
    q.deploy(model)
    for name in ("fc1", "fc2", "head"):
        assert len(model.get_submodule(name)._forward_pre_hooks) == 1
    h = model.act1(model.fc1(quant.quantize_activations(x)))
    assert torch.equal(model.fc2(h), nn.functional.linear(quant.quantize_activations(h), model.fc2.weight,
                                                          model.fc2.bias))
    assert torch.equal(seen["fc2"], quant.quantize_activations(seen["fc2"]))   # hook ran before training


# ---- packed export -----------------------------------------------------------------------------

def deployed(bits, width=32, **kw):
    model = mlp(width)
    adapters.FullFineTune().apply(model)
    q = Quantization(bits=bits, **kw)
    q.apply(model)
    return q.deploy(merge_adapters(model)), q


@pytest.mark.parametrize("bits,kw", [(16, {}), (8, {}), (4, {}), (4, {"group_size": 8}), (2, {}),
                                     (1.58, {}), (1.58, {"scale_rule": "median", "group_size": 4})])
@pytest.mark.parametrize("ternary_packing", ["trits", "ternary2"])
def test_pack_unpack_is_lossless(tmp_path, bits, kw, ternary_packing):
    model, q = deployed(bits, **kw)
    path = quant.save_packed(model, q, tmp_path / "m.safetensors", ternary_packing=ternary_packing)
    state = quant.load_packed(path)
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k
    fresh = mlp(seed=1)
    fresh.load_state_dict(state)


@pytest.mark.parametrize("packing", ["int4", "int2", "ternary2", "trits"])
def test_bit_packing_round_trips_every_code(packing):
    qmin, qmax = {"int4": (-8, 7), "int2": (-2, 1), "ternary2": (-1, 1), "trits": (-1, 1)}[packing]
    codes = torch.randint(qmin, qmax + 1, (7, 13), dtype=torch.int8)       # 91 codes: padding used
    packed = quant.pack(codes, packing)
    assert packed.numel() == quant.packed_nbytes(packing, 91)
    assert torch.equal(quant.unpack(packed, packing, 91).reshape(7, 13), codes)


def test_export_refuses_weights_off_the_grid(tmp_path):
    model = mlp()
    with pytest.raises(quant.QuantizationError, match="fc1.weight.*deploy"):
        quant.save_packed(model, Quantization(bits=4), tmp_path / "m.safetensors")


@pytest.mark.parametrize("bits", [32] + list(ALL_BITS))
def test_file_size_matches_bits_per_parameter(tmp_path, bits):
    # 512-wide layers: ~0.3M weights, so the JSON header (< 1 kB) is well under 1 % of the file.
    model, q = deployed(bits, width=512, group_size=16 if bits in (8, 4) else None)
    path = quant.save_packed(model, q, tmp_path / "m.safetensors")
    params = sum(v.numel() for v in model.state_dict().values())
    expected_bytes = q.bits_per_parameter(model) * params / 8
    assert abs(path.stat().st_size - expected_bytes) / expected_bytes < 0.02
    tensors, _ = quant.packed_tensors(model, q)
    assert sum(t.numel() * t.element_size() for t in tensors.values()) == expected_bytes


def test_bits_per_parameter_by_hand():
    model, q = deployed(4, group_size=8)
    # fc1 32x16, fc2 32x32, head 5x32: int4 codes + one bf16 scale per 8 weights; fp32 biases
    weights = 32 * 16 + 32 * 32 + 5 * 32
    biases = 32 + 32 + 5
    expected = (weights * 4 + weights // 8 * 16 + biases * 32) / (weights + biases)
    assert q.bits_per_parameter(model) == pytest.approx(expected)
    ternary, t = deployed(1.58)
    expected = ((16 * 32 // 5 + 1 + 32 * 32 // 5 + 1 + 5 * 32 // 5) * 8 + 3 * 16 + biases * 32) / (weights + biases)
    assert t.bits_per_parameter(ternary) == pytest.approx(expected)
    assert Quantization().bits_per_parameter(mlp()) == 32


# ---- configuration -----------------------------------------------------------------------------

def test_labels():
    assert [Quantization(bits=b).label for b in (32, 16, 8, 4, 2, 1.58)] == \
        ["fp32", "bf16", "int8", "int4", "int2", "b1.58"]
    assert Quantization(bits=4, group_size=32, activations=8).label == "int4-g32-a8"
    assert Quantization(bits=1.58, scale_rule="median").label == "b1.58-median"
    assert Quantization(bits=16, group_size=32).label == "bf16"


@pytest.mark.parametrize("kw,match", [({"bits": 3}, "bits=3"), ({"bits": 0}, "bits=0"),
                                      ({"bits": 1.58, "scale_rule": "max"}, "scale_rule='max'"),
                                      ({"bits": 4, "group_size": 0}, "group_size"),
                                      ({"bits": 8, "activations": 4}, "activations=4")])
def test_bad_configuration_raises(kw, match):
    with pytest.raises(SearchSpaceError, match=match):
        Quantization(**kw)


def test_group_size_not_dividing_a_layer_names_it():
    model = mlp()                                      # fc1 has 16 inputs, fc2 and head 32
    adapters.LoRA(rank=2).apply(model)
    with pytest.raises(SearchSpaceError, match=r"group_size=32.*'fc1'.*16"):
        Quantization(bits=4, group_size=32).apply(model)
    assert model.fc1.base.weight.unique().numel() > 16  # nothing was quantized


def test_json_round_trip_keeps_the_label():
    q = Quantization(bits=1.58, scale_rule="median", group_size=16, activations=8)
    again = pg.from_json_str(q.to_json_str())
    assert again == q and again.label == "b1.58-g16-median-a8"
    with pytest.raises(SearchSpaceError, match="ternary_packing"):
        Quantization(bits=8).bits_per_parameter(mlp(), ternary_packing="3bit")


def test_search_space_over_bits():
    space = Quantization(bits=pg.oneof([16, 8, 4, 1.58]), scale_rule=pg.oneof(["mean", "median"]))
    labels = {q.label for q in pg.iter(space)}
    assert labels == {"bf16", "int8", "int4", "b1.58", "b1.58-median"}
