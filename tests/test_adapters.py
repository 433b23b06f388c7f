"""The adapter family: one shared table over every adapter, then each method's own math.

Adding an adapter = one file under ``automl/adapters`` + one line in ``CASES``.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import pyglove as pg
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from automl import adapters
from automl.errors import SearchSpaceError
from automl.errors import ExportError
from automl.export import FULL_WEIGHTS, PROGRAM, export_adapter

R = 3


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(12, 16), act=nn.ReLU(), head=nn.Linear(16, 5)))


class Block(nn.Module):
    """A tiny attention-shaped block: q, k, v, o projections and an FFN (up, down)."""

    def __init__(self, d: int = 8, f: int = 12):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / math.sqrt(x.shape[-1]), -1)
        x = x + self.o(att @ self.v(x))
        return x + self.down(torch.relu(self.up(x)))


def transformer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(blocks=nn.Sequential(Block(), Block())))


# name, adapter, output unchanged at init, trainable scalars of one (out × in) layer at rank r
CASES = [
    ("LoRA", adapters.LoRA(rank=R), True, lambda o, i, r: r * (o + i)),
    ("RsLoRA", adapters.RsLoRA(rank=R, alpha=4.0), True, lambda o, i, r: r * (o + i)),
    ("PiSSA", adapters.PiSSA(rank=R), True, lambda o, i, r: r * (o + i)),
    ("PiSSA-fast", adapters.PiSSA(rank=R, init="svd_lowrank", niter=2), True, lambda o, i, r: r * (o + i)),
    ("DoRA", adapters.DoRA(rank=R), True, lambda o, i, r: r * (o + i) + o),
    ("SORSA", adapters.SORSA(rank=R), True, lambda o, i, r: r * (o + i) + r),
    ("SVFit", adapters.SVFit(rank=R), True, lambda o, i, r: r),
    ("FullFineTune", adapters.FullFineTune(), True, lambda o, i, r: o * i + o),
]
IDS = [c[0] for c in CASES]


def perturb(model: nn.Module, seed: int = 1) -> None:
    """Move every trainable parameter as training would (so adapters stop being no-ops)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g).to(p.dtype))


@pytest.mark.parametrize("name,adapter,noop,count", CASES, ids=IDS)
def test_shapes_noop_and_trainable_count(name, adapter, noop, count):
    base, x = mlp(), torch.randn(7, 12)
    model = adapter.apply(copy.deepcopy(base))
    out = model(x)
    assert out.shape == (7, 5)
    if noop:
        assert torch.allclose(out, base(x), atol=1e-5)
    expected = sum(count(m.out_features, m.in_features, R) for m in base.modules() if isinstance(m, nn.Linear))
    assert adapters.trainable_parameters(model) == expected


@pytest.mark.parametrize("name,adapter,noop,count", CASES, ids=IDS)
def test_merge_parity_and_exact_unmerge(name, adapter, noop, count):
    model, x = adapter.apply(mlp()), torch.randn(7, 12)
    perturb(model)
    expected = model(x)
    assert not torch.allclose(expected, mlp()(x), atol=1e-3)  # the perturbation changed the function
    for layer in (m for m in model.modules() if isinstance(m, adapters.AdapterLayer)):
        before, target = layer.base.weight.clone(), layer.merged_weight().detach()
        layer.merge()
        assert layer.merged and torch.equal(layer.base.weight, target)
        assert torch.allclose(model(x), expected, atol=1e-5)
        layer.unmerge()
        assert torch.equal(layer.base.weight, before)
    assert torch.allclose(model(x), expected, atol=1e-6)
    merged = adapters.merge_adapters(copy.deepcopy(model))
    assert all(type(m) is nn.Linear for n, m in merged.named_modules() if n in ("fc1", "head"))
    assert set(merged.state_dict()) == set(mlp().state_dict())
    assert torch.allclose(merged(x), expected, atol=1e-5)


@pytest.mark.parametrize("name,adapter,noop,count", CASES, ids=IDS)
def test_training_step_moves_only_trainable_parameters(name, adapter, noop, count):
    model, x, y = adapter.apply(mlp()), torch.randn(32, 12), torch.randint(5, (32,))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = nn.functional.cross_entropy(model(x), y) + adapter.penalty(model)
    loss.backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())
    assert all(not torch.equal(params[n], p) for n, p in trainable.items())


@pytest.mark.parametrize("name,adapter,noop,count", CASES, ids=IDS)
def test_follows_base_dtype(name, adapter, noop, count):
    model = adapter.apply(mlp().to(torch.bfloat16))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model(torch.randn(3, 12, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,adapter,noop,count", CASES, ids=IDS)
def test_cuda(name, adapter, noop, count):
    base, x = mlp().cuda(), torch.randn(7, 12, device="cuda")
    model = adapter.apply(copy.deepcopy(base))
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert torch.allclose(model(x), base(x), atol=1e-4)
    perturb(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    expected = model(x)
    assert torch.allclose(adapters.merge_adapters(model)(x), expected, atol=1e-4)


@pytest.mark.parametrize("name,adapter,noop,count", CASES, ids=IDS)
def test_transformer_targets(name, adapter, noop, count):
    base, x = transformer(), torch.randn(2, 5, 8)
    spec = adapter.clone(override={"targets": ("q", "v")})
    model = spec.apply(copy.deepcopy(base))
    for i in range(2):
        block = model.blocks[i]
        adapted = {n for n in ("q", "k", "v", "o", "up", "down")
                   if any(p.requires_grad for p in getattr(block, n).parameters())}
        assert adapted == {"q", "v"}
    assert torch.allclose(model(x), base(x), atol=1e-5)
    regex = adapter.clone(override={"targets": r"blocks\.1\.(up|down)"}).apply(copy.deepcopy(base))
    adapted = {n.rsplit(".", 1)[0] for n, p in regex.named_parameters() if p.requires_grad}
    assert adapted == {"blocks.1.up", "blocks.1.down"}


@pytest.mark.parametrize("name,adapter,noop,count", [c for c in CASES if not isinstance(c[1], adapters.LoRA)],
                         ids=[c[0] for c in CASES if not isinstance(c[1], adapters.LoRA)])
def test_export_merged_full_weights(name, adapter, noop, count, tmp_path):
    base, x = mlp(), torch.randn(7, 12)
    model = adapter.apply(copy.deepcopy(base))
    perturb(model)
    expected = model(x)
    export_adapter(adapter, adapter.trained_state(model), base, tmp_path)
    reloaded = mlp()
    reloaded.load_state_dict(load_file(str(tmp_path / FULL_WEIGHTS)))
    assert torch.allclose(reloaded(x), expected, atol=1e-5)
    assert pg.from_json_str((tmp_path / PROGRAM).read_text()) == adapter


def test_export_refuses_a_state_from_another_model(tmp_path):
    model = adapters.SVFit(rank=2).apply(transformer())
    with pytest.raises(ExportError, match="blocks.0.q.weight"):
        export_adapter(adapters.SVFit(rank=2), adapters.SVFit(rank=2).trained_state(model), mlp(), tmp_path)


# --- each method's own math (numpy as the independent reference) ---

def svd_np(w: torch.Tensor):
    return np.linalg.svd(w.detach().double().numpy(), full_matrices=False)


def test_lora_and_rslora_scales():
    for adapter, scale in ((adapters.LoRA(rank=4, alpha=8.0), 2.0), (adapters.RsLoRA(rank=4, alpha=8.0), 4.0)):
        model = adapter.apply(mlp())
        perturb(model)
        layer = model.fc1
        manual = layer.base.weight.double() + scale * layer.lora_B.double() @ layer.lora_A.double()
        assert torch.allclose(layer.merged_weight().double(), manual, atol=1e-6)


@pytest.mark.parametrize("alpha", [16.0, 3.0])
def test_pissa_init_is_principal_svd_with_residual(alpha):
    base = mlp()
    w, bias = base.fc1.weight.detach().clone(), base.fc1.bias.detach().clone()
    model = adapters.PiSSA(rank=R, alpha=alpha).apply(base)
    layer = model.fc1
    u, s, vh = svd_np(w)
    principal = (u[:, :R] * s[:R]) @ vh[:R]
    delta = layer.delta_weight().detach().double().numpy()
    np.testing.assert_allclose(delta, principal, atol=1e-5)
    residual = np.linalg.svd(layer.base.weight.detach().double().numpy(), compute_uv=False)
    np.testing.assert_allclose(residual[:len(s) - R], s[R:], atol=1e-5)
    # A = √(S/s) Vᵀ, B = U √(S/s): both factors carry the same singular-value share
    np.testing.assert_allclose(np.linalg.norm(layer.lora_A.detach().numpy(), axis=1),
                               np.sqrt(s[:R] / layer.scaling), rtol=1e-5)
    x = torch.randn(9, 12)
    assert torch.allclose(layer(x), nn.functional.linear(x, w, bias), atol=1e-5)


def test_pissa_fast_init_approaches_exact_spectrum():
    torch.manual_seed(0)
    u, v = torch.linalg.qr(torch.randn(64, 48))[0], torch.linalg.qr(torch.randn(48, 48))[0]
    w = (u * 0.7 ** torch.arange(48.0)) @ v.t()  # a decaying spectrum, as pretrained weights have
    layer = nn.Linear(48, 64)
    with torch.no_grad():
        layer.weight.copy_(w)
    torch.manual_seed(0)
    fast = adapters.LoraLinear(copy.deepcopy(layer), 4, 1.0, init="pissa", niter=8)
    exact = svd_np(w)[1][:4]
    fast_s = np.linalg.svd(fast.delta_weight().detach().double().numpy(), compute_uv=False)[:4]
    np.testing.assert_allclose(fast_s, exact, rtol=1e-3)
    assert torch.allclose(fast.merged_weight(), w, atol=1e-5)


def test_dora_magnitude_direction_and_detached_norm():
    model, x = adapters.DoRA(rank=R).apply(mlp()), torch.randn(9, 12)
    layer = model.fc1
    w = layer.base.weight.detach().clone()
    assert torch.allclose(layer.lora_magnitude_vector, w.norm(dim=1), atol=1e-6)
    perturb(model)
    v = w.double() + layer.scaling * layer.lora_B.detach().double() @ layer.lora_A.detach().double()
    manual = layer.lora_magnitude_vector.detach().double()[:, None] * v / v.norm(dim=1, keepdim=True)
    assert torch.allclose(layer.merged_weight().double(), manual, atol=1e-6)
    # gradients treat ‖W + sBA‖ as a constant (DoRA §4.3)
    params = [layer.lora_A, layer.lora_B, layer.lora_magnitude_vector]
    ours = torch.autograd.grad(layer(x).square().sum(), params)
    direction = w + layer.scaling * layer.lora_B @ layer.lora_A
    weight = layer.lora_magnitude_vector[:, None] * direction / direction.norm(dim=1, keepdim=True).detach()
    ref = torch.autograd.grad(nn.functional.linear(x, weight, layer.base.bias).square().sum(), params)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-4)


def test_sorsa_regulariser_zero_when_orthonormal_grows_otherwise():
    adapter = adapters.SORSA(rank=R, gamma=0.5)
    model = adapter.apply(mlp())
    assert float(adapter.penalty(model).detach()) < 1e-5  # SVD factors are orthonormal
    with torch.no_grad():
        model.fc1.svd_U.copy_(torch.linalg.qr(torch.randn(16, R))[0])
    assert float(adapter.penalty(model).detach()) < 1e-5
    values = []
    for c in (1.5, 2.0, 3.0):
        with torch.no_grad():
            model.fc1.svd_U.copy_(c * torch.linalg.qr(torch.randn(16, R))[0])
        values.append(float(adapter.penalty(model).detach()))
    # ‖c²I − I‖_F = (c² − 1)√r on one of two layers: γ · mean
    expected = [0.5 * (c * c - 1) * math.sqrt(R) / 2 for c in (1.5, 2.0, 3.0)]
    np.testing.assert_allclose(values, expected, rtol=1e-4)
    assert adapters.SORSA(rank=R, gamma=0.0).penalty(model) == 0.0


def test_svfit_trains_exactly_r_singular_values():
    model = adapters.SVFit(rank=R).apply(mlp())
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc1.svd_S": R, "head.svd_S": R}
    w = mlp().fc1.weight.detach()
    np.testing.assert_allclose(model.fc1.svd_S.detach().numpy(), svd_np(w)[1][:R], rtol=1e-5)


def test_layer_rank_is_overridable():
    class TwoRanks(adapters.LoRA):
        def layer_rank(self, name, linear):
            return 1 if name == "head" else self.rank

    model = TwoRanks(rank=4).apply(mlp())
    assert model.fc1.lora_A.shape == (4, 12) and model.head.lora_A.shape == (1, 16)
    assert model.head.scaling == 16.0


def test_hyper_values_are_not_validated_early():
    space = pg.oneof([adapters.PiSSA(rank=pg.oneof([2, 4]), niter=pg.oneof([0, 4])),
                      adapters.SORSA(rank=pg.oneof([1, 2]), gamma=pg.floatv(0.0, 1e-3)),
                      adapters.SVFit(rank=pg.oneof([4, 16]), targets=pg.oneof([("fc1",), "all-linear"]))])
    assert len(list(pg.iter(space, 3))) == 3


# --- bad input ---

@pytest.mark.parametrize("cls", [adapters.LoRA, adapters.RsLoRA, adapters.PiSSA, adapters.DoRA,
                                 adapters.SORSA, adapters.SVFit])
def test_rank_must_be_positive_and_fit_the_layer(cls):
    for bad in (0, -2):
        with pytest.raises(SearchSpaceError, match="rank"):
            cls(rank=bad)
    with pytest.raises(SearchSpaceError, match=r"'head'.*\[1, 5\]"):
        cls(rank=6).apply(mlp())


@pytest.mark.parametrize("make,match", [
    (lambda: adapters.SORSA(rank=2, gamma=-1e-3), "gamma"),
    (lambda: adapters.PiSSA(rank=2, init="svd_lowrank", niter=-1), "niter"),
    (lambda: adapters.PiSSA(rank=2, init="qr"), "init"),
    (lambda: adapters.LoRA(rank=2, alpha=0.0), "alpha"),
    (lambda: adapters.DoRA(rank=2, dropout=1.0), "dropout"),
    (lambda: adapters.SVFit(rank=2, targets=("fc9",)).apply(mlp()), "fc9"),
    (lambda: adapters.PiSSA(rank=2, targets=r"blocks\..*").apply(mlp()), "match no linear"),
])
def test_bad_input_raises_search_space_error(make, match):
    with pytest.raises(SearchSpaceError, match=match):
        make()
