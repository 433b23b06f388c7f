"""AdamW for the trainer: torch's own AdamW arithmetic behind a small stateful class.

``AdamW.step`` calls ``torch.optim.adamw.adamw``, the functional kernel that
``torch.optim.AdamW.step`` itself calls, with the same defaults, the same lazily created state
(``step``, ``exp_avg``, ``exp_avg_sq`` once a parameter first has a gradient) and the same choice
of implementation (single-tensor on CPU, foreach on CUDA), so the updates are bit-identical to
``torch.optim.AdamW`` (``tests/test_optim.py`` checks it step by step).

Why not ``torch.optim.AdamW`` itself: in torch 2.x every ``Optimizer`` wraps ``step``,
``zero_grad`` and ``add_param_group`` in hooks for ``torch.compile`` that import
``torch._dynamo`` on first use, about 2 s of a new worker's start-up on CPU
(``benchmarks/overhead.py``), for a compiler the trainer never runs.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim.adamw import adamw


class AdamW:
    """AdamW (Loshchilov & Hutter, 2019) over ``params`` with ``torch.optim.AdamW``'s defaults."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state: dict[torch.nn.Parameter, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``, as ``torch.optim`` does by default)."""
        for p in self.params:
            p.grad = None

    def _state(self, p: torch.nn.Parameter) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if p not in self.state:
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            self.state[p] = (torch.tensor(0.0, dtype=scalar),
                             torch.zeros_like(p, memory_format=torch.preserve_format),
                             torch.zeros_like(p, memory_format=torch.preserve_format))
        return self.state[p]

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        params = [p for p in self.params if p.grad is not None]
        steps, exp_avgs, exp_avg_sqs = zip(*(self._state(p) for p in params)) if params else ((), (), ())
        adamw(params, [p.grad for p in params], list(exp_avgs), list(exp_avg_sqs), [], list(steps),
              amsgrad=False, has_complex=any(torch.is_complex(p) for p in params), beta1=self.betas[0],
              beta2=self.betas[1], lr=self.lr, weight_decay=self.weight_decay, eps=self.eps, maximize=False)
