"""PiSSA's fast initialisation (``init="svd_lowrank"``, :mod:`automl.adapters.rsvd`): close to the
exact top-r SVD on a decaying spectrum (Frobenius error and principal angles), closer than peft's
``pissa_niter_N``, deterministic given the seed, the same factors whether a layer is computed alone
or batched with the other layers of its shape, and exact where it matters — residual plus adapter
reproduce ``W``, so the adapted model's output at initialisation is the base model's."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from automl import adapters
from automl.adapters import rsvd
from automl.adapters.base import principal_svd
from automl.adapters.rsvd import randomized_svd, randomized_svds
from tests.test_adapters import mlp

OUT, IN, RANK = 120, 80, 4
ERROR_BOUND = 1e-3     # ‖W − U_r S_r V_rᵀ‖_F ≤ (1 + ERROR_BOUND)·‖W − W_r‖_F (Eckart–Young optimum)
COS_BOUND = 0.999      # cosine of the largest principal angle to the exact top-r subspaces


def decaying(decay: float = 0.9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W = U diag(decay^i) Vᵀ`` (OUT × IN) with random orthonormal ``U``, ``V``, as pretrained
    weights have a decaying spectrum; returns ``W, U, S, V``."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(OUT, IN, generator=gen))[0]
    v = torch.linalg.qr(torch.randn(IN, IN, generator=gen))[0]
    s = decay ** torch.arange(IN, dtype=torch.float32)
    return (u * s) @ v.t(), u, s, v


def cos_largest_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of the largest principal angle between the column spaces of orthonormal ``a``, ``b``."""
    return float(torch.linalg.svdvals(a.t() @ b).min())


@pytest.mark.parametrize("seed", range(5))
def test_fast_init_is_within_the_bound_of_the_exact_top_r(seed):
    w, u, s, v = decaying()
    torch.manual_seed(seed)
    u_r, s_r, vh_r = randomized_svd(w, RANK, niter=3)
    optimum = s[RANK:].square().sum().sqrt()
    assert torch.linalg.matrix_norm(w - (u_r * s_r) @ vh_r) <= (1 + ERROR_BOUND) * optimum
    assert cos_largest_angle(u[:, :RANK], u_r) >= COS_BOUND
    assert cos_largest_angle(v[:, :RANK], vh_r.t()) >= COS_BOUND
    torch.testing.assert_close(s_r, s[:RANK], rtol=1e-4, atol=0)
    eye = torch.eye(RANK)
    torch.testing.assert_close(u_r.t() @ u_r, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(vh_r @ vh_r.t(), eye, atol=1e-5, rtol=0)


@pytest.mark.parametrize("niter", [1, 2, 3])
def test_fast_init_is_closer_to_the_exact_top_r_than_peft(niter):
    peft = pytest.importorskip("peft")
    w, _, s, _ = decaying()
    base = nn.Linear(IN, OUT, bias=False)
    with torch.no_grad():
        base.weight.copy_(w)
    config = peft.LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["lin"], init_lora_weights=f"pissa_niter_{niter}")
    errors = {"ours": [], "peft": []}
    for seed in range(3):
        torch.manual_seed(seed)
        theirs = peft.get_peft_model(nn.ModuleDict({"lin": copy.deepcopy(base)}), config).base_model.model.lin
        torch.manual_seed(seed)
        ours = adapters.LoraLinear(copy.deepcopy(base), RANK, 1.0, init="pissa", niter=niter)
        principal = {"ours": ours.delta_weight(),
                     "peft": theirs.lora_B["default"].weight @ theirs.lora_A["default"].weight}
        for name, p in principal.items():
            errors[name].append(float(torch.linalg.matrix_norm(w - p.detach())))
    assert max(errors["ours"]) < min(errors["peft"])


def test_fast_init_is_deterministic_given_the_seed():
    w = decaying()[0]
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(randomized_svd(w, RANK, niter=1))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not torch.equal(runs[0][0], runs[2][0])
    torch.manual_seed(0)
    one = adapters.PiSSA(rank=2, init="svd_lowrank", niter=2).apply(mlp())
    torch.manual_seed(0)
    two = adapters.PiSSA(rank=2, init="svd_lowrank", niter=2).apply(mlp())
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


@pytest.mark.parametrize("niter", [0, 1, 2, 4])
def test_residual_plus_adapter_reproduce_the_weight_and_the_output(niter):
    torch.manual_seed(0)
    linear = nn.Linear(IN, OUT)
    w = linear.weight.detach().clone()
    layer = adapters.LoraLinear(copy.deepcopy(linear), RANK, 2.0, init="pissa", niter=niter)
    torch.testing.assert_close(layer.merged_weight(), w, atol=1e-6, rtol=0)
    x = torch.randn(9, IN)
    torch.testing.assert_close(layer(x), linear(x), atol=1e-5, rtol=0)
    # the frozen base is the residual: its top singular values are the rest of W's spectrum
    assert torch.linalg.svdvals(layer.base.weight)[0] < torch.linalg.svdvals(w)[0]
    base, x = mlp(), torch.randn(7, 12)
    model = adapters.PiSSA(rank=3, init="svd_lowrank", niter=niter).apply(copy.deepcopy(base))
    torch.testing.assert_close(model(x), base(x), atol=1e-5, rtol=0)


def test_a_sketch_spanning_the_matrix_takes_the_exact_svd():
    w = decaying()[0][:20, :12]                       # k·niter = (4 + 4)·2 ≥ 12: the sketch spans it
    torch.manual_seed(0)
    fast = randomized_svd(w, RANK, niter=2)
    exact = torch.linalg.svd(w, full_matrices=False)
    for got, want in zip(fast, (exact.U[:, :RANK], exact.S[:RANK], exact.Vh[:RANK])):
        assert torch.equal(got, want)


def test_a_rank_deficient_weight_gives_finite_factors_and_the_same_weight():
    torch.manual_seed(0)
    w = torch.randn(OUT, 2) @ torch.randn(2, IN)     # rank 2 < RANK
    u_r, s_r, vh_r = randomized_svd(w, RANK, niter=2)
    assert torch.isfinite(u_r).all() and torch.isfinite(vh_r).all() and torch.isfinite(s_r).all()
    assert float(s_r[2:].max()) < 1e-3 * float(s_r[0])
    for weight in (w, torch.zeros(OUT, IN)):
        linear = nn.Linear(IN, OUT, bias=False)
        with torch.no_grad():
            linear.weight.copy_(weight)
        layer = adapters.LoraLinear(linear, RANK, 2.0, init="pissa", niter=2)
        assert torch.isfinite(layer.lora_A).all() and torch.isfinite(layer.lora_B).all()
        torch.testing.assert_close(layer.merged_weight(), weight, atol=1e-5, rtol=0)


def test_exact_init_is_the_exact_thin_svd_bit_for_bit():
    w = decaying()[0]
    for matrix in (w, w.t().contiguous()):
        u, s, vh = principal_svd(matrix, RANK)
        if matrix.shape[0] >= matrix.shape[1]:
            ref = torch.linalg.svd(matrix, full_matrices=False)
            want = ref.U[:, :RANK], ref.S[:RANK], ref.Vh[:RANK]
        else:
            ref = torch.linalg.svd(matrix.t(), full_matrices=False)
            want = ref.Vh[:RANK].t(), ref.S[:RANK], ref.U[:, :RANK].t()
        assert all(torch.equal(a, b) for a, b in zip((u, s, vh), want))


def layers_of_three_shapes(seed: int = 0) -> list[torch.Tensor]:
    """Decaying-spectrum weights of three shapes (square, tall, wide), interleaved as a model's."""
    w = [decaying(seed=seed + i)[0] for i in range(7)]
    return [w[0][:, :IN], w[1], w[2].t().contiguous(), w[3][:IN], w[4], w[5].t().contiguous(), w[6][:IN]]


class Wide(nn.Module):
    """A model whose linear layers come in three shapes, several of each (like a transformer's)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 96), nn.Linear(96, 64), nn.Linear(64, 64),
                                    nn.Linear(64, 96), nn.Linear(96, 64), nn.Linear(64, 64))

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize("niter", [0, 1, 2, 3])
def test_batched_layers_get_the_factors_each_would_get_alone(niter):
    weights = layers_of_three_shapes()
    torch.manual_seed(7)
    batched = randomized_svds(weights, RANK, niter)
    torch.manual_seed(7)                      # the same sketches, drawn one layer at a time in order
    alone = [randomized_svd(w, RANK, niter) for w in weights]
    for got, want in zip(batched, alone):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_batches_split_by_size_give_the_same_factors(monkeypatch):
    weights = layers_of_three_shapes()
    torch.manual_seed(1)
    whole = randomized_svds(weights, RANK, 2)
    monkeypatch.setattr(rsvd, "BATCH_BYTES", OUT * IN * 4 * 2)        # two layers of a shape per batch
    torch.manual_seed(1)
    split = randomized_svds(weights, RANK, 2)
    for got, want in zip(split, whole):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_every_batched_layer_is_within_the_bound_of_its_exact_top_r(seed):
    weights = layers_of_three_shapes(seed)
    torch.manual_seed(seed)
    for w, (u_r, s_r, vh_r) in zip(weights, randomized_svds(weights, RANK, niter=3)):
        exact = torch.linalg.svdvals(w)
        optimum = exact[RANK:].square().sum().sqrt()
        assert torch.linalg.matrix_norm(w - (u_r * s_r) @ vh_r) <= (1 + ERROR_BOUND) * optimum
        eye = torch.eye(RANK)
        torch.testing.assert_close(u_r.t() @ u_r, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(vh_r @ vh_r.t(), eye, atol=1e-5, rtol=0)


def test_pissa_hands_each_layer_its_own_factors():
    base = Wide()
    names = [f"layers.{i}" for i in range(7)]
    weights = [base.get_submodule(n).weight.detach().clone() for n in names]
    torch.manual_seed(3)
    want = randomized_svds(weights, 4, 2)
    torch.manual_seed(3)
    model = adapters.PiSSA(rank=4, alpha=8.0, init="svd_lowrank", niter=2).apply(copy.deepcopy(base))
    for name, w, (u, s, vh) in zip(names, weights, want):
        layer = model.get_submodule(name)
        torch.testing.assert_close(layer.delta_weight(), (u * s) @ vh, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.merged_weight(), w, atol=1e-6, rtol=0)


def test_fast_pissa_keeps_a_whole_model_output_and_is_deterministic():
    base, x = Wide(), torch.randn(5, 64)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append(adapters.PiSSA(rank=4, init="svd_lowrank").apply(copy.deepcopy(base)))
    torch.testing.assert_close(runs[0](x), base(x), atol=1e-5, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))


def test_exact_pissa_wraps_one_layer_at_a_time_bit_for_bit():
    base = Wide()
    model = adapters.PiSSA(rank=4).apply(copy.deepcopy(base))
    for i in range(7):
        alone = adapters.LoraLinear(copy.deepcopy(base.layers[i]), 4, 16.0 / 4, init="pissa")
        ours = model.layers[i]
        for key, tensor in alone.state_dict().items():
            assert torch.equal(ours.state_dict()[key], tensor), key
