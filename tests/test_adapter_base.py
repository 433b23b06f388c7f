"""The adapter layer's contract, on LoRA and full fine-tuning."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from automl import adapters
from automl.errors import SearchSpaceError


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(12, 16), act=nn.ReLU(), head=nn.Linear(16, 5)))


def test_lora_starts_as_base_model_and_freezes_base():
    model, x = mlp(), torch.randn(7, 12)
    before = model(x)
    adapters.LoRA(rank=4).apply(model)
    assert torch.equal(model(x), before)  # B = 0 at init
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc1.lora_A", "fc1.lora_B", "head.lora_A", "head.lora_B"}
    assert adapters.trainable_parameters(model) == 4 * (12 + 16) + 4 * (16 + 5)


def test_lora_merge_unmerge_exact():
    model, x = mlp(), torch.randn(7, 12)
    adapters.LoRA(rank=3, alpha=6.0).apply(model)
    for layer in (model.fc1, model.head):
        nn.init.normal_(layer.lora_B)
    original = model.fc1.base.weight.clone()
    expected = model(x)
    # independent math: W + (alpha / r) B A
    manual = original + 2.0 * model.fc1.lora_B @ model.fc1.lora_A
    model.fc1.merge(), model.head.merge()
    assert torch.allclose(model.fc1.base.weight, manual, atol=1e-6)
    assert torch.allclose(model(x), expected, atol=1e-5)
    model.fc1.unmerge(), model.head.unmerge()
    assert torch.equal(model.fc1.base.weight, original)
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_merge_adapters_gives_plain_linears_with_base_names():
    model, x = mlp(), torch.randn(7, 12)
    adapters.LoRA(rank=2).apply(model)
    nn.init.normal_(model.fc1.lora_B)
    expected = model(x)
    adapters.merge_adapters(model)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n in ("fc1", "head"))
    assert set(model.state_dict()) == set(mlp().state_dict())
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_targets_select_layers_by_name_and_regex():
    model = mlp()
    adapters.LoRA(rank=2, targets=("fc1",)).apply(model)
    assert isinstance(model.fc1, adapters.LoraLinear) and type(model.head) is nn.Linear
    model = mlp()
    adapters.LoRA(rank=2, targets="h.*").apply(model)
    assert type(model.fc1) is nn.Linear and isinstance(model.head, adapters.LoraLinear)


def test_full_finetune_trains_targeted_layers_only():
    model = mlp()
    adapters.FullFineTune(targets=("head",)).apply(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}


@pytest.mark.parametrize("targets", [("nope",), "nothing.*", ()])
def test_targets_matching_no_layer_are_refused(targets):
    with pytest.raises(SearchSpaceError, match="layer"):
        adapters.LoRA(rank=2, targets=targets).apply(mlp())


def test_rank_must_be_positive():
    with pytest.raises(SearchSpaceError, match="rank"):
        adapters.LoRA(rank=0)


def test_rank_larger_than_layer_names_layer_and_limit():
    with pytest.raises(SearchSpaceError, match=r"'head'.*\[1, 5\]"):
        adapters.LoRA(rank=8).apply(mlp())
