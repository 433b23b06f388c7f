"""automl.optim.AdamW against torch.optim.AdamW: the same updates, without torch._dynamo."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from automl.optim import AdamW


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3), nn.Linear(3, 2))


@pytest.mark.parametrize("kwargs", [{}, {"lr": 3e-2, "weight_decay": 0.0},
                                    {"lr": 1e-2, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}])
def test_updates_are_bit_identical_to_torch_adamw(kwargs):
    ours, theirs = _model(0), _model(0)
    opt_ours, opt_theirs = AdamW(ours.parameters(), **kwargs), torch.optim.AdamW(theirs.parameters(), **kwargs)
    torch.manual_seed(1)
    for step in range(12):
        x = torch.randn(8, 6)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            # the last layer sits out the first steps: its state starts late, as torch's does
            out = model[:3](x) if step < 4 else model(x)
            out.square().mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        step, exp_avg, exp_avg_sq = opt_ours.state[p]
        assert torch.equal(step, opt_theirs.state[q]["step"])
        assert torch.equal(exp_avg, opt_theirs.state[q]["exp_avg"])
        assert torch.equal(exp_avg_sq, opt_theirs.state[q]["exp_avg_sq"])


def test_zero_grad_drops_gradients_and_a_step_without_any_changes_nothing():
    model = _model(0)
    opt = AdamW(model.parameters())
    model(torch.randn(2, 6)).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    before = [p.clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.state == {}


def test_training_with_it_never_imports_torch_dynamo():
    """torch.optim's optimizers import torch._dynamo (seconds) on their first step; ours must not."""
    code = ("import sys, torch; from automl.optim import AdamW\n"
            "m = torch.nn.Linear(3, 2); opt = AdamW(m.parameters())\n"
            "for _ in range(2):\n"
            "    opt.zero_grad(); m(torch.randn(4, 3)).sum().backward(); opt.step()\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False", out.stderr
