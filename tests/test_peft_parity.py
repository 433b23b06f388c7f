"""Parity with HF peft (test-only dependency): same base and adapter weights → same outputs and
gradients (LoRA, rsLoRA, DoRA); PiSSA's initial factors and residual match peft's
``init_lora_weights="pissa"``; our export loads with
``PeftModel.from_pretrained`` and reproduces our outputs."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import automl
from automl import adapters, tasks
from automl.export import FULL_WEIGHTS, PEFT_CONFIG, export_adapter

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from tests.test_adapters import CASES, mlp, perturb, transformer  # noqa: E402

ATOL = 1e-5


def peft_layers(model: nn.Module) -> dict[str, nn.Module]:
    """peft's LoRA layers by the base model's layer name."""
    return {n[len("base_model.model."):]: m for n, m in model.named_modules()
            if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}


def copy_into_peft(ours: nn.Module, theirs: nn.Module) -> None:
    with torch.no_grad():
        for name, layer in peft_layers(theirs).items():
            mine = ours.get_submodule(name)
            layer.lora_A["default"].weight.copy_(mine.lora_A)
            layer.lora_B["default"].weight.copy_(mine.lora_B)
            if mine.use_dora:
                layer.lora_magnitude_vector["default"].weight.copy_(mine.lora_magnitude_vector)


LORA_CASES = [
    ("LoRA", adapters.LoRA(rank=3, alpha=6.0), dict(r=3, lora_alpha=6.0)),
    ("RsLoRA", adapters.RsLoRA(rank=4, alpha=6.0), dict(r=4, lora_alpha=6.0, use_rslora=True)),
    ("DoRA", adapters.DoRA(rank=2, alpha=5.0), dict(r=2, lora_alpha=5.0, use_dora=True)),
    # dropout modules present, evaluated in eval mode: the general DoRA path, deterministic
    ("DoRA-dropout", adapters.DoRA(rank=2, alpha=5.0, dropout=0.1),
     dict(r=2, lora_alpha=5.0, use_dora=True, lora_dropout=0.1)),
]


@pytest.mark.parametrize("name,adapter,config", LORA_CASES, ids=[c[0] for c in LORA_CASES])
@pytest.mark.parametrize("make", [mlp, transformer], ids=["mlp", "transformer"])
def test_outputs_and_gradients_match_peft(name, adapter, config, make):
    base = make()
    x = torch.randn(7, 12) if make is mlp else torch.randn(2, 5, 8)
    ours = adapter.apply(copy.deepcopy(base))
    perturb(ours)
    targets = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)]
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(target_modules=targets, **config))
    copy_into_peft(ours, theirs)
    ours.eval(), theirs.eval()
    out_ours, out_theirs = ours(x), theirs(x)
    assert torch.allclose(out_ours, out_theirs, atol=ATOL)
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    for layer_name, layer in peft_layers(theirs).items():
        mine = ours.get_submodule(layer_name)
        assert torch.allclose(mine.lora_A.grad, layer.lora_A["default"].weight.grad, atol=1e-4)
        assert torch.allclose(mine.lora_B.grad, layer.lora_B["default"].weight.grad, atol=1e-4)
        if mine.use_dora:
            assert torch.allclose(mine.lora_magnitude_vector.grad,
                                  layer.lora_magnitude_vector["default"].weight.grad, atol=1e-4)
    merged_ours = adapters.merge_adapters(ours)
    merged_theirs = theirs.merge_and_unload()
    for key, value in merged_theirs.state_dict().items():
        assert torch.allclose(merged_ours.state_dict()[key], value, atol=ATOL), key


def align_signs(a: torch.Tensor, b: torch.Tensor, ref_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip singular component i (row i of A, column i of B) where it points against ``ref_b``."""
    sign = torch.sign((b * ref_b).sum(0))
    return a * sign[:, None], b * sign[None, :]


# the fast init ("svd_lowrank") is our own randomized SVD, not peft's draw: tests/test_pissa_fast.py
# checks it against the exact SVD and against peft's "pissa_niter_N"
@pytest.mark.parametrize("init,peft_init", [("svd", "pissa")])
def test_pissa_factors_and_residual_match_peft(init, peft_init, monkeypatch):
    # the randomized SVD draws a random start: give both libraries the same draw at every call
    svd_lowrank = torch.svd_lowrank

    def seeded(*args, **kwargs):
        torch.manual_seed(5)
        return svd_lowrank(*args, **kwargs)

    monkeypatch.setattr(torch, "svd_lowrank", seeded)
    monkeypatch.setattr(peft.tuners.lora.layer, "svd_lowrank", seeded)
    base, x = mlp(), torch.randn(7, 12)
    ours = adapters.PiSSA(rank=3, alpha=6.0, init=init, niter=3).apply(copy.deepcopy(base))
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=3, lora_alpha=6.0, target_modules=["fc1", "head"],
                                                            init_lora_weights=peft_init))
    for name, layer in peft_layers(theirs).items():
        mine = ours.get_submodule(name)
        b_ref = layer.lora_B["default"].weight
        a, b = align_signs(mine.lora_A.detach(), mine.lora_B.detach(), b_ref)
        assert torch.allclose(a, layer.lora_A["default"].weight, atol=ATOL)
        assert torch.allclose(b, b_ref, atol=ATOL)
        assert torch.allclose(mine.base.weight, layer.base_layer.weight, atol=ATOL)
    assert torch.allclose(ours(x), theirs(x), atol=ATOL)
    assert torch.allclose(ours(x), base(x), atol=ATOL)


class TwoRanks(adapters.LoRA):
    """A LoRA whose head gets rank 1 (the shape of a per-layer rank choice such as WeLore's)."""

    def layer_rank(self, name, linear):
        return 1 if name.endswith("head") else self.rank


EXPORT_CASES = [
    ("LoRA", adapters.LoRA(rank=3), mlp),
    ("RsLoRA", adapters.RsLoRA(rank=4), mlp),
    ("DoRA", adapters.DoRA(rank=2), mlp),
    ("PiSSA", adapters.PiSSA(rank=3), mlp),
    ("PiSSA-fast", adapters.PiSSA(rank=2, init="svd_lowrank", niter=2), mlp),
    ("per-layer-rank", TwoRanks(rank=3), mlp),
    ("DoRA-transformer", adapters.DoRA(rank=2, targets=("q", "v")), transformer),
    ("RsLoRA-transformer", adapters.RsLoRA(rank=2, targets=r"blocks\.1\..*"), transformer),
]


@pytest.mark.parametrize("name,adapter,make", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_export_loads_in_peft_and_reproduces_outputs(name, adapter, make, tmp_path):
    base = make()
    x = torch.randn(7, 12) if make is mlp else torch.randn(2, 5, 8)
    ours = adapter.apply(copy.deepcopy(base))
    perturb(ours)
    expected = ours(x)
    export_adapter(adapter, adapter.trained_state(ours), base, tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path))
    assert set(peft_layers(loaded)) == {n for n, m in ours.named_modules() if isinstance(m, adapters.LoraLinear)}
    assert torch.allclose(loaded(x), expected, atol=ATOL)
    config = json.loads((tmp_path / PEFT_CONFIG).read_text())
    if isinstance(adapter, adapters.PiSSA):
        assert config["r"] == 2 * adapter.rank


@pytest.mark.parametrize("name,adapter,noop,count", CASES, ids=[c[0] for c in CASES])
def test_trained_recipe_exports_the_deployed_model(name, adapter, noop, count, tmp_path):
    """End to end on the digits task: the trainer's ``trained_states`` export to a model that
    computes what the trainer deployed (peft for the LoRA family, merged weights otherwise)."""
    task = tasks.get("digits")
    result = automl.evaluate(automl.Recipe(adapter=adapter, steps=10, lr=1e-2), task=task)
    base, x = task.pretrained_model(), task.subtasks[0].test.x[:50]
    export_adapter(adapter, result.trained_states[0], base, tmp_path)
    if isinstance(adapter, adapters.LoRA):
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path))
    else:
        loaded = copy.deepcopy(base)
        loaded.load_state_dict(load_file(str(tmp_path / FULL_WEIGHTS)))
    expected = result.model(x)
    assert not torch.allclose(expected, base(x), atol=1e-3)
    assert torch.allclose(loaded(x), expected, atol=1e-4)
