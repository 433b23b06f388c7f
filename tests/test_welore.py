"""WeLore-informed per-layer ranks (Jaiswal et al., 2024)."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from automl import adapters
from automl.errors import SearchSpaceError
from automl.spectral import welore_rank


def model_with_spectra():
    """fc1 has a heavy-tailed spectrum (4 large singular values), fc2 a flat one."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(32, 32), nn.Linear(32, 32)
    u, _ = torch.linalg.qr(torch.randn(32, 32))
    v, _ = torch.linalg.qr(torch.randn(32, 32))
    s = torch.cat([torch.full((4,), 10.0), torch.full((28,), 0.01)])
    with torch.no_grad():
        fc1.weight.copy_(u @ torch.diag(s) @ v.t())
        fc2.weight.copy_(u @ v.t())
    return nn.Sequential(OrderedDict(fc1=fc1, act=nn.ReLU(), fc2=fc2))


def test_ranks_follow_the_spectrum():
    model = model_with_spectra()
    k1, k2 = welore_rank(model.fc1.weight, 0.9), welore_rank(model.fc2.weight, 0.9)
    assert (k1, k2) == (4, 29)
    ranks = adapters.LoRA(rank=8, ranks=adapters.WeLoreRanks(keep=0.9)).layer_ranks(model)
    assert ranks == {"fc1": round(8 * 4 / 29), "fc2": 8}


@pytest.mark.parametrize("adapter", [adapters.LoRA, adapters.DoRA, adapters.SORSA])
def test_adapted_layers_get_their_ranks(adapter):
    model = model_with_spectra()
    adapter(rank=8, ranks=adapters.WeLoreRanks(keep=0.9)).apply(model)
    assert adapters.trainable_parameters(model) > 0
    shapes = {name: module for name, module in model.named_modules() if isinstance(module, adapters.AdapterLayer)}
    ranks = {n: getattr(m, "rank") for n, m in shapes.items()}
    assert ranks == {"fc1": 1, "fc2": 8}


def test_only_low_rank_components_are_adapted():
    model = model_with_spectra()
    adapter = adapters.LoRA(rank=4, ranks=adapters.WeLoreRanks(keep=0.9, only_low_rank=True))
    adapter.apply(model)
    assert isinstance(model.fc1, adapters.LoraLinear) and type(model.fc2) is nn.Linear
    assert not model.fc2.weight.requires_grad


def test_no_low_rank_component_is_a_clear_error():
    model = model_with_spectra()
    adapter = adapters.LoRA(rank=4, targets=("fc2",), ranks=adapters.WeLoreRanks(only_low_rank=True))
    with pytest.raises(SearchSpaceError, match="no targeted layer is a low-rank component"):
        adapter.apply(model)


def test_bad_keep_is_refused():
    with pytest.raises(SearchSpaceError, match="keep must lie in"):
        adapters.WeLoreRanks(keep=1.5)
