"""Merge methods against independent math (hand-computed TIES, DARE's expectation, SLERP's
geometry, permutation symmetry) and against peft (TIES, LoRA "cat" combination)."""
import copy
import math
from collections import OrderedDict

import pyglove as pg
import pytest
import torch
from torch import nn

import automl
from automl import adapters, merge
from automl.errors import SearchSpaceError
from automl.merge.rebasin import permute_state, spec_from_module, spec_from_state, weight_matching


def mlp(seed: int, hidden: int = 16) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(8, hidden), act1=nn.ReLU(), fc2=nn.Linear(hidden, hidden),
                                     act2=nn.ReLU(), head=nn.Linear(hidden, 4)))


def random_perm(spec, state, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {p: torch.randperm(n, generator=gen) for p, n in spec.sizes(state).items()}


def flat(values) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float32)}


# ---------------------------------------------------------------- task vectors: TA, TIES, DARE

TAUS = [[4.0, -1.0, 0.5, -3.0, 2.0, 0.1],
        [-2.0, 3.0, -0.2, -1.0, -5.0, 0.3],
        [1.0, 2.0, 6.0, 0.5, 1.5, -0.1]]
BASE = [1.0, 1.0, -1.0, 0.0, 2.0, 0.5]


def models_from(taus, base=BASE):
    return [flat([b + t for b, t in zip(base, tau)]) for tau in taus]


def test_task_arithmetic_adds_scaled_task_vectors():
    merged = merge.TaskArithmetic(scale=0.5).merge(flat(BASE), models_from(TAUS))["w"]
    expected = [b + 0.5 * sum(t[i] for t in TAUS) for i, b in enumerate(BASE)]
    assert merged.tolist() == pytest.approx(expected)


def test_linear_is_the_weighted_mean():
    models = models_from(TAUS)
    merged = merge.Linear(weights=(1.0, 2.0, 1.0)).merge(flat(BASE), models)["w"]
    expected = (models[0]["w"] + 2 * models[1]["w"] + models[2]["w"]) / 4
    assert torch.allclose(merged, expected)


def test_ties_matches_hand_computed_trim_elect_disjoint_mean():
    # density 0.5 keeps 3 of 6 per task vector:
    #   τ1 → [4, 0, 0, -3, 2, 0]; τ2 → [-2, 3, 0, 0, -5, 0]; τ3 → [0, 2, 6, 0, 1.5, 0]
    # "sum": signs of [2, 5, 6, -3, -1.5, 0] = [+, +, +, -, -, + (tie)]
    #   disjoint means: [4, (3+2)/2, 6, -3, -5, 0]
    merged = merge.TIES(density=0.5, scale=0.5, sign="sum").merge(flat(BASE), models_from(TAUS))["w"]
    expected = [b + 0.5 * m for b, m in zip(BASE, [4.0, 2.5, 6.0, -3.0, -5.0, 0.0])]
    assert merged.tolist() == pytest.approx(expected)
    # "count": entry 4 has signs (+, -, +) → + → mean of 2 and 1.5
    merged = merge.TIES(density=0.5, scale=1.0, sign="count").merge(flat(BASE), models_from(TAUS))["w"]
    expected = [b + m for b, m in zip(BASE, [4.0, 2.5, 6.0, -3.0, 1.75, 0.0])]
    assert merged.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("sign,peft_sign", [("sum", "total"), ("count", "frequency")])
def test_ties_matches_peft(sign, peft_sign):
    merge_utils = pytest.importorskip("peft.utils.merge_utils")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(10, 10, generator=gen)
    taus = [torch.randn(10, 10, generator=gen) for _ in range(3)]
    ours = merge.TIES(density=0.3, sign=sign).merge({"w": base}, [{"w": base + t} for t in taus])["w"]
    theirs = merge_utils.ties(taus, torch.ones(3), density=0.3, majority_sign_method=peft_sign)
    assert torch.allclose(ours - base, theirs, atol=1e-6)


def test_dare_expected_value_equals_the_input():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(4, 5, generator=gen)
    taus = [torch.randn(4, 5, generator=gen) for _ in range(2)]
    models = [{"w": base + t} for t in taus]
    n = 2000
    mean = sum(merge.DARE(drop=0.5, seed=s).merge({"w": base}, models)["w"] for s in range(n)) / n
    expected = base + (taus[0] + taus[1]) / 2
    # per entry: Var[τ̃] = τ² p/(1-p) = τ², so the mean of two over n seeds has sd ≤ |τ|max / √(2n)
    tol = 5 * max(t.abs().max() for t in taus) / math.sqrt(2 * n)
    assert (mean - expected).abs().max() < tol
    unscaled = sum(merge.DARE(drop=0.5, rescale=False, seed=s).merge({"w": base}, models)["w"]
                   for s in range(n)) / n
    assert (unscaled - (base + 0.5 * (taus[0] + taus[1]) / 2)).abs().max() < tol


def test_dare_drops_the_requested_fraction_and_is_seeded():
    base = torch.zeros(100, 100)
    ones = [{"w": torch.ones(100, 100)}, {"w": torch.ones(100, 100)}]
    dare = merge.DARE(drop=0.3, then="ties", seed=3)
    tau = dare.sparsify("w", torch.ones(100, 100), 0)
    assert abs(float((tau == 0).float().mean()) - 0.3) < 0.02
    assert torch.allclose(tau[tau != 0], torch.full_like(tau[tau != 0], 1 / 0.7))
    first, again = dare.merge({"w": base}, ones)["w"], dare.merge({"w": base}, ones)["w"]
    assert torch.equal(first, again)
    assert not torch.equal(first, merge.DARE(drop=0.3, then="ties", seed=4).merge({"w": base}, ones)["w"])
    # dare-ties of agreeing positive vectors: the mean over the models that kept an entry
    both_dropped = first == 0
    assert torch.allclose(first[~both_dropped], torch.full_like(first[~both_dropped], 1 / 0.7))
    assert abs(float(both_dropped.float().mean()) - 0.3 ** 2) < 0.02


def test_dare_without_drop_is_linear():
    models = models_from(TAUS)
    assert torch.allclose(merge.DARE(drop=0.0).merge(flat(BASE), models)["w"],
                          merge.Linear().merge(flat(BASE), models)["w"])


# ---------------------------------------------------------------- SLERP

def test_slerp_endpoints_and_geometry():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    base = {"w": torch.zeros(3, 4)}
    assert torch.allclose(merge.SLERP(t=0.0).merge(base, [{"w": a}, {"w": b}])["w"], a, atol=1e-6)
    assert torch.allclose(merge.SLERP(t=1.0).merge(base, [{"w": a}, {"w": b}])["w"], b, atol=1e-6)
    # orthogonal unit vectors: the midpoint is (e1 + e2)/√2, on the unit circle
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = merge.SLERP(t=0.5).merge({"w": torch.zeros(2)}, [{"w": e1}, {"w": e2}])["w"]
    assert torch.allclose(mid, (e1 + e2) / math.sqrt(2))
    # at t=1/3 the angle to e1 is 30°
    third = merge.SLERP(t=1 / 3).merge({"w": torch.zeros(2)}, [{"w": e1}, {"w": e2}])["w"]
    assert torch.allclose(third, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))


def test_slerp_falls_back_to_lerp_for_parallel_tensors():
    v = torch.tensor([1.0, 2.0, 3.0])
    merged = merge.SLERP(t=0.25).merge({"w": torch.zeros(3)}, [{"w": v}, {"w": 3 * v}])["w"]
    assert torch.allclose(merged, 0.75 * v + 0.25 * 3 * v)


# ---------------------------------------------------------------- weight matching

def test_permuted_mlp_is_matched_back_exactly():
    model = mlp(0)
    state = model.state_dict()
    spec = spec_from_state(state)
    assert spec == spec_from_module(model)
    assert spec.perm_to_axes["fc1"] == (("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1))
    pi = random_perm(spec, state, seed=5)
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(permute_state(spec, pi, state))
    x = torch.randn(7, 8)
    assert torch.allclose(model(x), permuted(x), atol=1e-6)           # same function
    assert not torch.allclose(state["fc1.weight"], permuted.state_dict()["fc1.weight"])
    found, sweeps = weight_matching(spec, state, permuted.state_dict())
    for p in pi:                                                       # found = inverse of π
        assert torch.equal(found[p], torch.argsort(pi[p]))
    assert 1 <= sweeps <= 3
    aligned = merge.WeightMatching().align(model, permuted)
    for k, v in state.items():
        assert torch.equal(aligned.state_dict()[k], v)
    assert torch.allclose(aligned(x), permuted(x), atol=1e-6)


def test_permutation_leaves_singular_values_unchanged():
    model = mlp(1)
    state = model.state_dict()
    spec = spec_from_state(state)
    permuted = permute_state(spec, random_perm(spec, state, seed=6), state)
    for key in ("fc1.weight", "fc2.weight", "head.weight"):
        assert torch.allclose(torch.linalg.svdvals(state[key]), torch.linalg.svdvals(permuted[key]), atol=1e-5)
    assert max(merge.singular_value_change(state, permuted).values()) < 1e-6


def test_alignment_of_independent_models_preserves_function_and_improves_similarity():
    a, b = mlp(2), mlp(3)
    aligned = merge.WeightMatching().align(a, b)
    x = torch.randn(9, 8)
    assert torch.allclose(aligned(x), b(x), atol=1e-5)
    before = sum((a.state_dict()[k] * b.state_dict()[k]).sum() for k in a.state_dict())
    after = sum((a.state_dict()[k] * aligned.state_dict()[k]).sum() for k in a.state_dict())
    assert after > before


def test_weight_matching_merges_a_model_with_its_permuted_copy_into_itself():
    model = mlp(4)
    state = model.state_dict()
    spec = spec_from_state(state)
    permuted = permute_state(spec, random_perm(spec, state, seed=7), state)
    base = mlp(9).state_dict()
    merged = merge.WeightMatching().merge(base, [state, permuted])
    for k in state:
        assert torch.allclose(merged[k], state[k], atol=1e-6)
    naive = merge.Linear().merge(base, [state, permuted])
    assert not torch.allclose(naive["fc1.weight"], state["fc1.weight"])
    ties = merge.WeightMatching(then=merge.TIES(density=1.0)).merge(base, [state, permuted])
    assert torch.allclose(ties["fc2.weight"], state["fc2.weight"], atol=1e-6)


def test_transformer_ffn_hidden_units_are_permuted():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True).eval()
    spec = spec_from_module(layer)
    assert spec == spec_from_state(layer.state_dict())
    assert list(spec.perm_to_axes) == ["linear1"]
    state = layer.state_dict()
    pi = random_perm(spec, state, seed=8)
    other = copy.deepcopy(layer)
    other.load_state_dict(permute_state(spec, pi, state))
    x = torch.randn(2, 5, 8)
    assert torch.allclose(layer(x), other(x), atol=1e-5)
    found, _ = weight_matching(spec, state, other.state_dict())
    assert torch.equal(found["linear1"], torch.argsort(pi["linear1"]))
    aligned = merge.WeightMatching().align(layer, other)
    assert torch.allclose(aligned(x), layer(x), atol=1e-5)


class BertFFN(nn.Module):
    """BERT's names: ``intermediate.dense`` (d → ff), ``output.dense`` (ff → d) + LayerNorm."""

    def __init__(self):
        super().__init__()
        self.intermediate, self.output = nn.Module(), nn.Module()
        self.intermediate.dense, self.output.dense = nn.Linear(6, 12), nn.Linear(12, 6)
        self.output.LayerNorm = nn.LayerNorm(6)

    def forward(self, x):
        return self.output.LayerNorm(x + self.output.dense(nn.functional.gelu(self.intermediate.dense(x))))


class SwiGLU(nn.Module):
    """LLaMA's names: ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(6, 10, bias=False), nn.Linear(6, 10, bias=False)
        self.down_proj = nn.Linear(10, 6, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def test_bert_and_llama_ffn_names_are_permuted():
    torch.manual_seed(1)
    model = nn.ModuleDict({"bert": BertFFN(), "llama": SwiGLU()})
    spec = spec_from_module(model)
    assert spec == spec_from_state(model.state_dict())
    assert spec.perm_to_axes["llama.up_proj"] == (("llama.up_proj.weight", 0), ("llama.gate_proj.weight", 0),
                                                   ("llama.down_proj.weight", 1))
    assert set(spec.perm_to_axes) == {"bert.intermediate.dense", "llama.up_proj"}
    state = model.state_dict()
    pi = random_perm(spec, state, seed=11)
    other = copy.deepcopy(model)
    other.load_state_dict(permute_state(spec, pi, state))
    x = torch.randn(4, 6)
    for name in ("bert", "llama"):
        assert torch.allclose(model[name](x), other[name](x), atol=1e-5)
    found, _ = weight_matching(spec, state, other.state_dict())
    assert all(torch.equal(found[p], torch.argsort(pi[p])) for p in pi)


# ---------------------------------------------------------------- LoRA deltas on their factors

def lora_models(ranks=(2, 3, 1)):
    base_model = mlp(10)
    models = []
    for i, r in enumerate(ranks):
        model = adapters.LoRA(rank=r, alpha=2.0 * r + 1).apply(copy.deepcopy(base_model))
        gen = torch.Generator().manual_seed(20 + i)
        for m in model.modules():
            if isinstance(m, adapters.LoraLinear):
                m.lora_B.data = torch.randn(m.lora_B.shape, generator=gen)
        models.append(model)
    return base_model.state_dict(), models


@pytest.mark.parametrize("method", [merge.Linear(), merge.Linear(weights=(1.0, 3.0, 2.0)),
                                    merge.TaskArithmetic(scale=0.4), merge.TIES(density=0.3),
                                    merge.DARE(drop=0.4, then="ties", seed=1)])
def test_low_rank_merge_equals_dense_merge(method):
    base, models = lora_models()
    deltas = [merge.lora_task_vectors(m, base) for m in models]
    assert set(deltas[0]) == {"fc1.weight", "fc2.weight", "head.weight"}
    dense = [adapters.merge_adapters(copy.deepcopy(m)).state_dict() for m in models]
    expected = method.merge(base, dense)
    merged = method.merge_low_rank(base, deltas)
    for k in base:
        assert torch.allclose(merged[k], expected[k], atol=1e-5), k


def test_linear_in_task_vectors_stays_low_rank():
    base, models = lora_models()
    deltas = [merge.lora_task_vectors(m, base) for m in models]
    factored = merge.TaskArithmetic(scale=0.7).merged_low_rank(deltas)
    assert factored["fc2.weight"].rank == 2 + 3 + 1
    dense = merge.TaskArithmetic(scale=0.7).merge(base, [adapters.merge_adapters(m).state_dict() for m in models])
    assert torch.allclose(base["fc2.weight"] + factored["fc2.weight"].dense(), dense["fc2.weight"], atol=1e-5)
    with pytest.raises(SearchSpaceError, match="not linear in the task vectors"):
        merge.TIES(density=0.5).merged_low_rank(deltas)


def test_low_rank_task_arithmetic_matches_peft_cat():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = peft.get_peft_model(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)),
                                peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"], init_lora_weights=False),
                                adapter_name="first")
    model.add_adapter("second", peft.LoraConfig(r=3, lora_alpha=3, target_modules=["0", "2"], init_lora_weights=False))
    model.add_weighted_adapter(["first", "second"], [0.7, 0.7], "m", combination_type="cat")
    layer = model.base_model.model[0]
    deltas = [{"0.weight": merge.LowRankDelta(layer.scaling[n] * layer.lora_B[n].weight.detach(),
                                              layer.lora_A[n].weight.detach())} for n in ("first", "second")]
    ours = merge.TaskArithmetic(scale=0.7).merged_low_rank(deltas)["0.weight"]
    assert torch.allclose(ours.dense(), layer.get_delta_weight("m").detach(), atol=1e-6)


def test_lora_task_vectors_refuse_a_changed_base():
    base, models = lora_models(ranks=(2,))
    models[0].fc1.base.weight.data += 1.0
    with pytest.raises(SearchSpaceError, match="'fc1'"):
        merge.lora_task_vectors(models[0], base)


# ---------------------------------------------------------------- diagnostics

def scalar_model(w: float) -> dict[str, torch.Tensor]:
    return {"weight": torch.tensor([[w]])}


def test_loss_barrier_of_known_paths():
    model = nn.Linear(1, 1, bias=False)
    hump = lambda m: float(1 - m.weight.item() ** 2)              # noqa: E731  L(t) = 1 - (2t-1)^2
    assert merge.loss_barrier(model, scalar_model(-1.0), scalar_model(1.0), hump, points=5) == pytest.approx(1.0)
    bowl = lambda m: float(m.weight.item() ** 2)                  # noqa: E731  convex: no barrier
    assert merge.loss_barrier(model, scalar_model(-1.0), scalar_model(1.0), bowl, points=5) == pytest.approx(0.0)
    assert model.weight.shape == (1, 1)


def test_singular_alignment_and_merge_metrics_on_a_permuted_copy():
    model = mlp(5)
    state = model.state_dict()
    spec = spec_from_state(state)
    permuted = permute_state(spec, random_perm(spec, state, seed=9), state)
    assert merge.singular_alignment(state, state, top=3) == pytest.approx({"fc1": 1.0, "fc2": 1.0, "head": 1.0})
    x = torch.randn(32, 8)
    target = model(x).argmax(-1)
    loss = torch.no_grad()(lambda m: float(nn.functional.cross_entropy(m(x), target)))
    metrics = merge.merge_metrics(merge.WeightMatching(), model, [state, permuted], loss)
    assert metrics["merge/barrier"] > 1e-3
    assert metrics["merge/barrier_matched"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["merge/alignment/fc1"] < 0.9
    assert metrics["merge/alignment_matched/fc1"] == pytest.approx(1.0)
    assert metrics["merge/sv_change"] < 1e-6
    assert "merge/barrier_matched" not in merge.merge_metrics(merge.Linear(), model, [state, permuted], loss)


def test_weight_matching_diagnostics_reuse_the_merge_and_are_unchanged(monkeypatch):
    model = mlp(5)
    state = model.state_dict()
    spec = spec_from_state(state)
    other = permute_state(spec, random_perm(spec, state, seed=9), mlp(6).state_dict())
    x = torch.randn(32, 8)
    target = model(x).argmax(-1)
    loss = torch.no_grad()(lambda m: float(nn.functional.cross_entropy(m(x), target)))
    # the diagnostics as computed before the hook: a second, independent weight matching
    perm, sweeps = weight_matching(spec, state, other)
    matched = permute_state(spec, perm, other)
    expected = {"merge/barrier": merge.loss_barrier(model, state, other, loss),
                **{f"merge/alignment/{k}": v for k, v in merge.singular_alignment(state, other).items()},
                "merge/barrier_matched": merge.loss_barrier(model, state, matched, loss),
                **{f"merge/alignment_matched/{k}": v for k, v in merge.singular_alignment(state, matched).items()},
                "merge/sweeps": float(sweeps),
                "merge/sv_change": max(merge.singular_value_change(other, matched).values())}
    calls = []
    counted = lambda *args, **kwargs: calls.append(1) or weight_matching(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr("automl.merge.rebasin.weight_matching", counted)
    method = merge.WeightMatching()
    method.merge(None, [state, other])
    assert merge.merge_metrics(method, model, [state, other], loss) == expected
    assert len(calls) == 1                      # the merge's matching, reused by the diagnostics
    changed = dict(other)
    changed["fc1.weight"] = other["fc1.weight"].clone()
    merge.merge_metrics(method, model, [state, changed], loss)
    assert len(calls) == 2                      # another pair is matched anew


def test_weight_matching_runs_once_per_fit(monkeypatch):
    calls = []
    counted = lambda *args, **kwargs: calls.append(1) or weight_matching(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr("automl.merge.rebasin.weight_matching", counted)
    recipe = automl.Recipe(adapter=adapters.FullFineTune(), merge=merge.WeightMatching(), steps=2)
    result = automl.evaluate(recipe, task="digits-seeds")
    assert len(calls) == 1
    assert {"merge/barrier_matched", "merge/sweeps", "merge/sv_change"} <= set(result.metrics)


# ---------------------------------------------------------------- bad input

def test_different_keys_or_shapes_name_the_tensor():
    base = mlp(0).state_dict()
    other = dict(base)
    other["fc2.weight"] = torch.zeros(3, 3)
    with pytest.raises(SearchSpaceError, match="'fc2.weight'"):
        merge.TIES(density=0.5).merge(base, [base, other])
    missing = {k: v for k, v in base.items() if k != "head.bias"}
    with pytest.raises(SearchSpaceError, match="head.bias"):
        merge.Linear().merge(base, [base, missing])


@pytest.mark.parametrize("build", [lambda: merge.TIES(density=0.0), lambda: merge.TIES(density=1.5),
                                   lambda: merge.TIES(density=0.5, sign="mean"), lambda: merge.DARE(drop=1.0),
                                   lambda: merge.DARE(drop=-0.1), lambda: merge.DARE(then="slerp"),
                                   lambda: merge.SLERP(t=1.5), lambda: merge.WeightMatching(max_iter=0),
                                   lambda: merge.Linear(weights=(1.0, -1.0)),
                                   lambda: merge.TaskArithmetic(scale=float("nan"))])
def test_bad_fields_are_refused(build):
    with pytest.raises(SearchSpaceError):
        build()


def test_hyper_values_are_accepted_in_a_space():
    space = automl.Recipe(adapter=adapters.LoRA(rank=2),
                          merge=pg.oneof([merge.TIES(density=pg.floatv(0.1, 0.9)), merge.DARE(drop=pg.oneof([0.3, 0.5])),
                                          merge.WeightMatching(then=pg.oneof([merge.Linear(), merge.SLERP()]))]))
    assert not pg.is_deterministic(space)


@pytest.mark.parametrize("method", [merge.Linear(weights=(1.0, 2.0)), merge.TaskArithmetic(scale=0.4),
                                    merge.TIES(density=0.3, sign="count"), merge.DARE(drop=0.2, then="ties", seed=3),
                                    merge.SLERP(t=0.3), merge.WeightMatching(then=merge.TIES(density=0.5), seed=2)])
def test_methods_round_trip_through_json(method):
    restored = pg.from_json_str(method.to_json_str())
    assert restored == method
    models = [mlp(1).state_dict(), mlp(2).state_dict()]
    merged, again = method.merge(mlp(0).state_dict(), models), restored.merge(mlp(0).state_dict(), models)
    assert all(torch.equal(merged[k], again[k]) for k in merged)


def test_slerp_needs_exactly_two_models():
    models = models_from(TAUS)
    with pytest.raises(SearchSpaceError, match="exactly 2 models, got 3"):
        merge.SLERP().merge(flat(BASE), models)
    with pytest.raises(SearchSpaceError, match="exactly 2 models, got 1"):
        merge.SLERP().merge(flat(BASE), models[:1])


def test_weight_matching_names_a_layer_it_cannot_permute():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 2))
    with pytest.raises(SearchSpaceError, match="'1.weight'.*LayerNorm"):
        merge.WeightMatching().align(model, copy.deepcopy(model))
    with pytest.raises(SearchSpaceError, match="'1.weight'"):
        merge.WeightMatching().merge(model.state_dict(), [model.state_dict(), model.state_dict()])
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU())
    with pytest.raises(SearchSpaceError, match="'0.weight'"):
        merge.WeightMatching().merge(conv.state_dict(), [conv.state_dict(), conv.state_dict()])
    lora = adapters.LoRA(rank=2).apply(mlp(0))
    with pytest.raises(SearchSpaceError, match="'fc1' is an unmerged LoraLinear"):
        merge.WeightMatching().align(lora, copy.deepcopy(lora))


# ---------------------------------------------------------------- end to end

def test_weight_matching_in_a_recipe_on_digits_seeds():
    recipe = automl.Recipe(adapter=adapters.FullFineTune(), merge=merge.WeightMatching(), steps=20, lr=3e-3)
    result = automl.evaluate(recipe, task="digits-seeds")
    assert 0.0 <= result.accuracy <= 1.0
    assert set(k for k in result.metrics if k.startswith("accuracy/")) == {"accuracy/seed1", "accuracy/seed2"}


@pytest.mark.parametrize("method", [merge.TaskArithmetic(), merge.TIES(), merge.DARE(),
                                    merge.WeightMatching(then=merge.TaskArithmetic())],
                         ids=["TaskArithmetic", "TIES", "DARE", "WeightMatching-then-TA"])
def test_task_vector_merges_refuse_models_from_different_random_inits(method):
    recipe = automl.Recipe(adapter=adapters.FullFineTune(), merge=method, steps=2)
    with pytest.raises(automl.errors.SearchSpaceError, match="share no base"):
        automl.evaluate(recipe, task="digits-seeds")


def test_averaging_merges_need_no_base():
    models = [{"w": torch.ones(2)}, {"w": 3 * torch.ones(2)}]
    assert torch.equal(merge.Linear().merge(None, models)["w"], 2 * torch.ones(2))
