"""Spectral metrics and intruder mitigation, checked against independent constructions and peft."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyglove as pg
import pytest
import scipy.linalg
import scipy.stats
import torch
from torch import nn

from automl import spectral
from automl.errors import SearchSpaceError, TrainingError
from automl.mitigation import Mitigation
from automl.spectral import (FAST_TOLERANCE, SVDCache, batched_svd, effective_rank, intruder_curve,
                             intruder_dimensions, low_rank_component, spectral_drift, spectral_report,
                             subspace_overlap, welore_rank, welore_ranks)

REPO = Path(__file__).resolve().parents[1]


def orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g))[0]


def pretrained(n: int = 64, seed: int = 0, decay: float = 0.9):
    """``W0 = Q diag(σ) Pᵀ`` with distinct, geometrically decaying σ (full rank)."""
    q, p = orthogonal(n, seed), orthogonal(n, seed + 1)
    s = 10 * decay ** torch.arange(n, dtype=torch.float32)
    return q @ torch.diag(s) @ p.T, q, s, p


def inject(w0: torch.Tensor, q: torch.Tensor, p: torch.Tensor, m: int, strength: float = 1000.0):
    """Add ``m`` orthonormal directions ``x_a = Q h_a/√n`` (Hadamard columns ``h_a``) with large
    singular values: ``|cos(x_a, q_j)| = 1/√n`` for every pretrained left vector ``q_j``."""
    n = w0.shape[0]
    h = torch.tensor(scipy.linalg.hadamard(n), dtype=torch.float32) / math.sqrt(n)
    w1 = w0.clone()
    for a in range(m):
        w1 += strength * (1 + a) * torch.outer(q @ h[:, a + 1], p @ h[:, a + 1])
    return w1


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(16, 32), act1=nn.ReLU(), fc2=nn.Linear(32, 32),
                                     act2=nn.ReLU(), head=nn.Linear(32, 4)))


@pytest.fixture
def cache(tmp_path) -> SVDCache:
    return SVDCache(tmp_path / "svd")


# --- intruder dimensions ------------------------------------------------------------------------

@pytest.mark.parametrize("m", [0, 1, 3, 5, 10])
def test_injected_orthogonal_directions_are_exactly_m_intruders(m, cache):
    w0, q, _, p = pretrained()
    w1 = inject(w0, q, p, m)
    assert intruder_dimensions(w0, w1, top_k=10, epsilon=0.5, cache=cache) == m
    # with top_k below m only the top_k vectors are examined
    assert intruder_dimensions(w0, w1, top_k=2, epsilon=0.5, cache=cache) == min(m, 2)


def test_rotation_inside_pretrained_top_space_has_no_intruders(cache):
    # A unit vector in the span of 3 pretrained vectors has |cos| >= 1/sqrt(3) > 0.5 with one
    # of them, so rotating the top-3 left vectors can create no intruder; the same rotation
    # applied to a top-3 block of *new* directions creates exactly 3.
    w0, q, s, p = pretrained()
    rotation = orthogonal(3, seed=7)
    q1 = q.clone()
    q1[:, :3] = q[:, :3] @ rotation
    w1 = q1 @ torch.diag(s) @ p.T
    u1 = torch.linalg.svd(w1)[0]
    assert (u1[:, :3].T @ q[:, :3]).abs().max(dim=1).values.min() < 0.99   # the vectors did move
    assert intruder_dimensions(w0, w1, cache=cache) == 0


def _peft_lora(seed, in_features, out_features, rank, lora_b, lora_a):
    """A one-layer peft LoRA model with the factors ``lora_b()``, ``lora_a()`` (drawn after
    seeding); returns the model, its layer and the pretrained weight."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(seed)
    base = nn.Sequential(OrderedDict(fc=nn.Linear(in_features, out_features)))
    w0 = base.fc.weight.detach().clone()
    model = peft.get_peft_model(base, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["fc"]))
    layer = model.base_model.model.fc
    with torch.no_grad():
        layer.lora_B["default"].weight.copy_(lora_b())
        layer.lora_A["default"].weight.copy_(lora_a())
    return model, layer, w0


def test_intruder_count_matches_peft_port(cache):
    from peft.tuners.lora.intruders import reduce_intruder_dimension
    model, layer, w0 = _peft_lora(0, 48, 32, 4, lambda: torch.randn(32, 4) * 0.5,
                                  lambda: torch.randn(4, 48) * 0.5)
    w1 = w0 + layer.get_delta_weight("default")
    logged = []
    reduce_intruder_dimension(model, logging_sink=logged.append)
    peft_count = next(int(line.split("Intruders: ")[1]) for line in logged if "Intruders:" in line)
    assert peft_count > 0
    assert intruder_dimensions(w0, w1.detach(), cache=cache) == peft_count


def test_curve_is_monotone_and_agrees_with_single_counts(cache):
    torch.manual_seed(1)
    w0 = torch.randn(40, 40)
    w1 = w0 + 0.8 * torch.randn(40, 3) @ torch.randn(3, 40)
    epsilons = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99]
    curve = intruder_curve(w0, w1, epsilons, top_k=10, cache=cache)
    assert curve == sorted(curve) and curve[0] < curve[-1]
    assert curve == [intruder_dimensions(w0, w1, 10, e, cache=cache) for e in epsilons]


# --- effective rank, WeLore, drift, overlap ----------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_effective_rank_of_k_equal_singular_values_is_k(k):
    q, p = orthogonal(30, 3), orthogonal(20, 4)
    w = 2.5 * q[:, :k] @ p[:, :k].T
    assert effective_rank(w) == pytest.approx(k, rel=1e-5)


def test_effective_rank_matches_scipy_entropy():
    w = torch.randn(25, 40, generator=torch.Generator().manual_seed(5))
    s = np.linalg.svd(w.numpy().astype(np.float64), compute_uv=False)
    assert effective_rank(w) == pytest.approx(math.exp(scipy.stats.entropy(s / s.sum())), rel=1e-5)
    assert effective_rank(torch.zeros(4, 6)) == 0.0


def test_welore_rank_keeps_the_fraction_of_the_singular_value_sum():
    q, p = orthogonal(8, 8), orthogonal(8, 9)
    s = torch.tensor([4.0, 3.0, 2.0, 1.0, 0, 0, 0, 0])   # Σσ = 10, cumulative 4, 7, 9, 10
    w = q @ torch.diag(s) @ p.T
    keeps = (0.3, 0.39, 0.41, 0.69, 0.71, 0.89, 0.91, 1.0)
    assert [welore_rank(w, keep) for keep in keeps] == [1, 1, 2, 2, 3, 3, 4, 4]
    # rank 3 of 8 keeps 90 %: a reduction of 5/8 > 1/2 makes it a low-rank component
    assert low_rank_component(w, keep=0.9, min_reduction=0.5)
    assert not low_rank_component(w, keep=0.9, min_reduction=0.7)
    assert not low_rank_component(torch.eye(8), keep=0.9)


def test_welore_ranks_per_layer_from_the_cache(cache):
    model = mlp(0)
    with torch.no_grad():                                   # fc2 becomes rank 3
        model.fc2.weight.copy_(torch.randn(32, 3) @ torch.randn(3, 32))
    ranks = welore_ranks(model, keep=0.95, cache=cache)
    assert ranks == {n: welore_rank(model.get_submodule(n).weight, 0.95) for n in ("fc1", "fc2", "head")}
    assert ranks["fc2"] <= 3 < ranks["fc1"]
    assert cache.misses == 3 and welore_ranks(model, 0.5, ["fc2"], cache=cache)["fc2"] <= 2
    assert cache.misses == 3


def test_drift_and_overlap_against_constructions(cache):
    w0, q, s, p = pretrained(32)
    assert spectral_drift(w0, 1.1 * w0) == pytest.approx(0.1, rel=1e-4)
    assert subspace_overlap(w0, 1.1 * w0, cache=cache) == pytest.approx(1.0, abs=1e-5)
    swapped = q[:, 10:20] @ torch.diag(s[:10]) @ p[:, 10:20].T + q[:, :10] @ torch.diag(s[20:30]) @ p[:, :10].T
    assert subspace_overlap(w0, swapped, top_k=10, cache=cache) == pytest.approx(0.0, abs=1e-5)
    half = q[:, :5] @ torch.diag(s[:5]) @ p[:, :5].T + q[:, 10:15] @ torch.diag(s[5:10]) @ p[:, 10:15].T
    assert subspace_overlap(w0, half, top_k=10, cache=cache) == pytest.approx(0.5, abs=1e-5)


def test_spectral_report_fields_agree_with_the_single_functions(cache):
    base, tuned = mlp(0), mlp(0)
    with torch.no_grad():
        tuned.fc2.weight += 0.5 * torch.randn(32, 2) @ torch.randn(2, 32)
    report = spectral_report(base, tuned, cache=cache, keep=0.9)
    assert list(report) == ["fc1", "fc2", "head"]
    for name, r in report.items():
        w0, w1 = base.get_submodule(name).weight, tuned.get_submodule(name).weight
        assert r.layer == name
        assert r.intruders == intruder_dimensions(w0, w1, cache=cache) == len(r.intruder_indices)
        assert r.effective_rank_base == pytest.approx(effective_rank(w0), rel=1e-5)
        assert r.effective_rank_tuned == pytest.approx(effective_rank(w1), rel=1e-5)
        assert r.drift == pytest.approx(spectral_drift(w0, w1), rel=1e-5, abs=1e-6)
        assert r.overlap == pytest.approx(subspace_overlap(w0, w1, cache=cache), abs=1e-5)
        assert (r.welore_rank_base, r.welore_rank_tuned) == (welore_rank(w0), welore_rank(w1))
        assert r.low_rank_tuned == low_rank_component(w1)
        assert r.intruders_at(0.99) >= r.intruders >= r.intruders_at(0.01)
    assert report["fc1"].drift == 0.0 and report["fc1"].intruders == 0
    assert report["fc2"].drift > 0
    with pytest.raises(Exception):
        report["fc1"].intruders = 3   # frozen


# --- mitigation ---------------------------------------------------------------------------------

def _linear_model(w: torch.Tensor) -> nn.Sequential:
    model = nn.Sequential(OrderedDict(fc=nn.Linear(w.shape[1], w.shape[0], bias=False)))
    with torch.no_grad():
        model.fc.weight.copy_(w)
    return model


def test_mitigation_with_lambda_one_is_identity(cache):
    w0, q, _, p = pretrained()
    base, tuned = _linear_model(w0), _linear_model(inject(w0, q, p, 3))
    before = tuned.fc.weight.detach().clone()
    assert Mitigation(scale=1.0).apply(base, tuned, ["fc"], cache=cache) is tuned
    torch.testing.assert_close(tuned.fc.weight.detach(), before, rtol=1e-5, atol=1e-3)


def test_mitigation_lowers_only_the_intruders_singular_values(cache):
    w0, q, _, p = pretrained()
    w1 = inject(w0, q, p, 3)
    base, tuned = _linear_model(w0), _linear_model(w1)
    u1, s1, vh1 = torch.linalg.svd(w1)
    Mitigation(scale=0.5).apply(base, tuned, ["fc"], cache=cache)
    w2 = tuned.fc.weight.detach()
    expected = s1.clone()
    expected[:3] *= 0.5                          # the 3 injected directions are the top 3
    torch.testing.assert_close(torch.linalg.svdvals(w2), expected.sort(descending=True).values,
                               rtol=1e-4, atol=1e-3)
    # singular vectors unchanged: U1ᵀ W' V1 is diagonal with the scaled values in place
    torch.testing.assert_close(u1.T @ w2 @ vh1.T, torch.diag(expected), rtol=1e-4, atol=2e-3)
    assert intruder_dimensions(w0, w2, cache=cache) == 3   # still intruders, just smaller


def test_mitigation_leaves_layers_no_wider_than_top_k_alone(cache):
    def model(seed):
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict(fc=nn.Linear(16, 32), head=nn.Linear(32, 8)))
    base, tuned = model(0), model(1)                         # independent weights
    mitigation = Mitigation(scale=0.5, top_k=8, epsilon=0.9)
    assert intruder_dimensions(base.head.weight, tuned.head.weight, 8, 0.9, cache=cache) > 0
    assert intruder_dimensions(base.fc.weight, tuned.fc.weight, 8, 0.9, cache=cache) > 0
    head, fc = tuned.head.weight.detach().clone(), tuned.fc.weight.detach().clone()
    mitigation.apply(base, tuned, cache=cache)
    assert torch.equal(tuned.head.weight.detach(), head)     # 8 rows: top-8 is every vector
    assert not torch.allclose(tuned.fc.weight.detach(), fc)


def test_mitigation_matches_peft_reduce_intruder_dimension(cache):
    from peft.tuners.lora.intruders import reduce_intruder_dimension
    # r = min(out, in): peft's refit of the mitigated delta into rank r is then exact
    model, layer, w0 = _peft_lora(2, 16, 96, 16, lambda: torch.randn(96, 2) @ torch.randn(2, 16) * 0.3,
                                  lambda: torch.randn(16, 16) * 0.3)
    ours = _linear_model(w0 + layer.get_delta_weight("default").detach())
    reference = _linear_model(w0)
    reduce_intruder_dimension(model, mitigation_lambda=0.6, logging_sink=None)
    expected = w0 + layer.get_delta_weight("intruder_reduced").detach()
    assert intruder_dimensions(w0, ours.fc.weight, cache=cache) > 0
    Mitigation(scale=0.6).apply(reference, ours, ["fc"], cache=cache)
    torch.testing.assert_close(ours.fc.weight.detach(), expected, rtol=1e-4, atol=1e-4)


def test_mitigation_is_searchable_and_validated():
    space = Mitigation(scale=pg.floatv(0.5, 1.0))
    assert not pg.is_deterministic(space)
    assert Mitigation().scale == 0.75 and Mitigation().label == "Mitigation"
    for bad in (0.0, -0.2, 1.5):
        with pytest.raises(SearchSpaceError, match=r"\(0, 1\]"):
            Mitigation(scale=bad)
    with pytest.raises(SearchSpaceError, match="positive integer"):
        Mitigation(top_k=0)
    with pytest.raises(SearchSpaceError, match=r"open interval \(0, 1\)"):
        Mitigation(epsilon=1.0)


# --- SVD cache ----------------------------------------------------------------------------------

def test_cache_hits_memory_then_disk_and_survives_a_new_process(cache):
    base, tuned = mlp(0), mlp(1)
    first = spectral_report(base, tuned, cache=cache)
    assert (cache.misses, cache.hits) == (3, 0)
    assert len(list(cache.directory.glob("*.safetensors"))) == 3
    assert spectral_report(base, tuned, cache=cache) == first
    assert (cache.misses, cache.hits, cache.disk_hits) == (3, 3, 0)
    again = SVDCache(cache.directory)                      # a new trial, same folder
    assert spectral_report(base, tuned, cache=again) == first
    assert (again.misses, again.disk_hits) == (0, 3)
    script = ("import torch, sys; from automl.spectral import SVDCache; "
              "from tests.test_spectral import mlp; c = SVDCache(sys.argv[1]); "
              "u, s, vh = c.svd(mlp(0).fc2.weight); "
              "print(c.misses, c.disk_hits, float((u @ torch.diag(s) @ vh - mlp(0).fc2.weight).abs().max()))")
    out = subprocess.run([sys.executable, "-c", script, str(cache.directory)], cwd=REPO, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    misses, disk_hits, error = out.stdout.split()
    assert (misses, disk_hits) == ("0", "1") and float(error) < 1e-5


def test_cache_returns_one_row_major_layout_from_memory_and_disk(cache):
    w = torch.randn(40, 24)                                  # LAPACK returns U column-major
    computed = cache.svd(w)
    from_memory = cache.svd(w)
    from_disk = SVDCache(cache.directory).svd(w)
    for factors in (computed, from_memory, from_disk):
        assert all(f.is_contiguous() for f in factors)
    for a, b in zip(computed, from_disk):
        assert a.stride() == b.stride() and torch.equal(a, b)


def test_cache_recomputes_an_unreadable_file(cache):
    w = torch.randn(12, 9)
    u, s, vh = cache.svd(w)
    path = next(cache.directory.glob("*.safetensors"))
    path.write_bytes(b"not a safetensors file")
    fresh = SVDCache(cache.directory)
    u2, s2, _ = fresh.svd(w)
    assert (fresh.misses, fresh.disk_hits) == (1, 0)
    torch.testing.assert_close(s2, s)
    assert SVDCache(cache.directory).svd(w) is not None and not list(cache.directory.glob("*.tmp"))


def test_default_cache_lives_in_the_user_cache_home(studies, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "home"))
    c = SVDCache()
    c.svd(torch.randn(5, 7))
    assert list((tmp_path / "home" / "svd").glob("*.safetensors"))
    assert not (studies / ".cache").exists()
    memory_only = SVDCache(studies / "other", persist=False)
    memory_only.svd(torch.randn(5, 7))
    assert not (studies / "other").exists() or not list((studies / "other").iterdir())


def test_batched_svd_matches_one_by_one(cache):
    g = torch.Generator().manual_seed(3)
    ws = [torch.randn(6, 4, generator=g), torch.randn(5, 5, generator=g), torch.randn(6, 4, generator=g)]
    for w, (u, s, vh) in zip(ws, batched_svd(ws)):
        torch.testing.assert_close(s, torch.linalg.svdvals(w))
        torch.testing.assert_close(u @ torch.diag(s) @ vh, w, atol=1e-5, rtol=1e-5)
    cache.svd_many(ws + [ws[0]])                             # a batch of equal shapes, a duplicate
    assert (cache.misses, cache.hits) == (3, 1)
    reloaded = SVDCache(cache.directory)
    for w, (u, s, vh) in zip(ws, reloaded.svd_many(ws)):
        torch.testing.assert_close(u @ torch.diag(s) @ vh, w, atol=1e-5, rtol=1e-5)
    assert reloaded.disk_hits == 3


def test_second_trial_hits_the_disk_cache(studies):
    import automl
    from automl.trainer import fit
    recipe = automl.Recipe(adapter=automl.adapters.LoRA(rank=2), steps=3)
    first, second = SVDCache(studies / "svd"), SVDCache(studies / "svd")
    fit(recipe, "digits", device="cpu", svd_cache=first)
    fit(recipe, "digits", device="cpu", svd_cache=second)
    assert first.misses == 3 and (second.misses, second.disk_hits) == (0, 3)


# --- fast path ----------------------------------------------------------------------------------

@pytest.mark.parametrize("decay", [0.93, 0.966])
def test_fast_path_within_documented_tolerance(decay, cache):
    n = 300
    w0, q, _, p = pretrained(n, seed=11, decay=decay)        # σ_30 / σ_10 = decay^20: 0.23, 0.50
    w1 = w0.clone()
    h = torch.tensor(scipy.linalg.hadamard(256), dtype=torch.float32) / 16
    for a in range(3):                                       # 3 intruders above σ0_max = 10
        x = q[:, :256] @ h[:, a + 1]
        w1 += (30 + 10 * a) * torch.outer(x, p[:, a])
    w1 += 0.01 * torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    base, tuned = _linear_model(w0), _linear_model(w1)
    exact = spectral_report(base, tuned, cache=cache)["fc"]
    rng = torch.get_rng_state()
    fast = spectral_report(base, tuned, cache=cache, fast=True)["fc"]
    assert torch.equal(torch.get_rng_state(), rng)          # the global RNG is untouched
    assert exact.intruders == fast.intruders == 3
    assert np.abs(np.subtract(exact.similarity, fast.similarity)).max() <= FAST_TOLERANCE
    assert fast.effective_rank_tuned == pytest.approx(exact.effective_rank_tuned, rel=FAST_TOLERANCE)
    assert fast.drift == pytest.approx(exact.drift, abs=FAST_TOLERANCE)
    assert fast.overlap == pytest.approx(exact.overlap, abs=FAST_TOLERANCE)
    assert fast.welore_rank_tuned == exact.welore_rank_tuned
    assert spectral_report(base, tuned, cache=cache, fast=True) == {"fc": fast}   # reproducible
    u, s, _ = torch.linalg.svd(w1)
    approx = spectral._fast_spectrum(w1, 10)
    cosines = (approx.u_top.T @ u[:, :10]).diagonal().abs()
    assert cosines.min() >= 1 - FAST_TOLERANCE
    torch.testing.assert_close(approx.s[:10], s[:10], rtol=FAST_TOLERANCE, atol=0)


def test_fast_path_only_for_large_matrices():
    assert not spectral._fast_applies(torch.zeros(64, 512), 10)
    assert spectral._fast_applies(torch.zeros(384, 1536), 10)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [0.0, 1.0, -0.1, 1.5])
def test_epsilon_outside_open_unit_interval_is_refused(epsilon, cache):
    w = torch.randn(8, 8)
    with pytest.raises(SearchSpaceError, match=r"epsilon must lie in the open interval \(0, 1\)"):
        intruder_dimensions(w, w, epsilon=epsilon, cache=cache)
    with pytest.raises(SearchSpaceError, match=r"\(0, 1\)"):
        spectral_report(mlp(0), mlp(0), epsilon=epsilon, cache=cache)
    with pytest.raises(SearchSpaceError, match=r"\(0, 1\)"):
        intruder_curve(w, w, [0.5, epsilon], cache=cache)


@pytest.mark.parametrize("top_k", [0, -3, 2.5, True])
def test_top_k_must_be_a_positive_integer(top_k, cache):
    w = torch.randn(8, 8)
    with pytest.raises(SearchSpaceError, match=r"top_k must be a positive integer \(1, 2, 3, ...\)"):
        intruder_dimensions(w, w, top_k=top_k, cache=cache)
    with pytest.raises(SearchSpaceError, match="top_k"):
        spectral_report(mlp(0), mlp(0), top_k=top_k, cache=cache)


def test_other_bad_input_names_the_problem(cache):
    with pytest.raises(SearchSpaceError, match=r"differ in shape: \(8, 8\) vs \(8, 9\)"):
        intruder_dimensions(torch.randn(8, 8), torch.randn(8, 9), cache=cache)
    with pytest.raises(SearchSpaceError, match="2-D"):
        effective_rank(torch.randn(3, 4, 5))
    with pytest.raises(SearchSpaceError, match=r"keep must lie in \(0, 1\]"):
        welore_rank(torch.randn(4, 4), keep=1.2)
    with pytest.raises(SearchSpaceError, match=r"layer 'act1' is not a linear layer.*\['fc1', 'fc2', 'head'\]"):
        spectral_report(mlp(0), mlp(1), layers=["act1"], cache=cache)
    broken = mlp(1)
    with torch.no_grad():
        broken.fc2.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="'fc2'.*non-finite"):
        spectral_report(mlp(0), broken, cache=cache)
