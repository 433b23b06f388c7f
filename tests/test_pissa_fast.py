"""PiSSA's fast initialisation (``init="svd_lowrank"``, :mod:`automl.adapters.rsvd`): close to the
exact top-r SVD on a decaying spectrum (Frobenius error and principal angles), closer than peft's
``pissa_niter_N``, deterministic given the seed, and exact where it matters — residual plus adapter
reproduce ``W``, so the adapted model's output at initialisation is the base model's."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from automl import adapters
from automl.adapters.base import principal_svd
from automl.adapters.rsvd import randomized_svd
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
