"""Adapter speed and PiSSA initialisation, measured in one run (ratios, not absolute times).

1. fwd+bwd step time of our LoRA and DoRA layers ÷ peft's, on MiniLM-sized shapes: 6 blocks of
   384×384 q, k, v, o and 384↔1536 FFN linears, batch 16 × 64 tokens (goal ≤ 1.0).
2. PiSSA initialisation of that stack: exact SVD time ÷ fast ``svd_lowrank`` time (goal ≥ 20×).
3. The first 50 fine-tuning steps of PiSSA (exact and fast init) and LoRA on the built-in digits
   task (mirrored images, shifted labels): mean and last training loss.

Usage: ``python benchmarks/adapters.py [--device cuda] [--threads N] [--reps N]``.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from automl import adapters

D, F, BLOCKS, BATCH, TOKENS = 384, 1536, 6, 16, 64


class Block(nn.Module):
    """The linear layers of one MiniLM block, chained (attention mixing omitted: it is the same
    for every adapter and would only dilute the ratio)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.up, self.down = nn.Linear(D, F), nn.Linear(F, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.o(torch.tanh(self.q(x) + self.k(x) + self.v(x)))
        return x + self.down(torch.relu(self.up(x)))


def stack(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(Block() for _ in range(BLOCKS))).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_seconds(model: nn.Module, x: torch.Tensor) -> float:
    """One forward + backward pass (the optimizer step is the same for both libraries)."""
    sync(x.device)
    t0 = time.perf_counter()
    model(x).square().mean().backward()
    sync(x.device)
    seconds = time.perf_counter() - t0
    for p in model.parameters():
        p.grad = None
    return seconds


def speed(device: torch.device, reps: int) -> None:
    from peft import LoraConfig, get_peft_model

    base = stack(device)
    x = torch.randn(BATCH, TOKENS, D, device=device)
    targets = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)]
    for name, ours_spec, config in (("LoRA", adapters.LoRA(rank=8), {}),
                                    ("DoRA", adapters.DoRA(rank=8), {"use_dora": True})):
        ours = ours_spec.apply(copy.deepcopy(base))
        theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=targets, **config))
        times: dict[str, list[float]] = {"ours": [], "peft": []}
        for i in range(reps + 2):  # interleaved, two warm-up rounds dropped
            for label, model in (("ours", ours), ("peft", theirs)):
                t = step_seconds(model, x)
                if i >= 2:
                    times[label].append(t)
        mine, peft_s = statistics.median(times["ours"]), statistics.median(times["peft"])
        print(f"{name} r=8 fwd+bwd step: ours {mine * 1e3:.1f} ms, peft {peft_s * 1e3:.1f} ms, "
              f"ours/peft = {mine / peft_s:.3f} (goal <= 1.0)")


def pissa_init(device: torch.device, reps: int) -> None:
    base = stack(device)
    specs = {"exact SVD": adapters.PiSSA(rank=8)}
    specs.update({f"svd_lowrank(niter={n})": adapters.PiSSA(rank=8, init="svd_lowrank", niter=n) for n in (4, 2)})
    seconds: dict[str, list[float]] = {label: [] for label in specs}
    for _ in range(max(3, reps // 2)):  # interleaved rounds
        for label, spec in specs.items():
            model = copy.deepcopy(base)
            sync(device)
            t0 = time.perf_counter()
            spec.apply(model)
            sync(device)
            seconds[label].append(time.perf_counter() - t0)
    exact = statistics.median(seconds.pop("exact SVD"))
    print(f"PiSSA r=8 init of {BLOCKS * 6} linears: exact SVD {exact * 1e3:.1f} ms")
    for label, runs in seconds.items():
        fast = statistics.median(runs)
        print(f"  {label}: {fast * 1e3:.1f} ms, exact/fast = {exact / fast:.1f}x (goal >= 20x)")
    # the gap grows with width (O(n³) against O(n² r)): one LLM-sized 2048×2048 layer
    torch.manual_seed(0)
    layer = nn.Linear(2048, 2048).to(device)
    one: dict[str, float] = {}
    for label, niter in (("exact", None), ("fast", 4)):
        fresh = copy.deepcopy(layer)
        sync(device)
        t0 = time.perf_counter()
        adapters.LoraLinear(fresh, 8, 2.0, init="pissa", niter=niter)
        sync(device)
        one[label] = time.perf_counter() - t0
    print(f"PiSSA r=8 init of one 2048×2048 linear: exact {one['exact'] * 1e3:.0f} ms, niter=4 "
          f"{one['fast'] * 1e3:.1f} ms, exact/fast = {one['exact'] / one['fast']:.0f}x")


def first_steps(device: torch.device, steps: int = 50) -> None:
    from automl import tasks

    task = tasks.get("digits")
    data = task.subtasks[0].train.to(device)
    for label, spec in (("PiSSA exact", adapters.PiSSA(rank=4, targets=("fc1", "fc2"))),
                        ("PiSSA fast ", adapters.PiSSA(rank=4, targets=("fc1", "fc2"), init="svd_lowrank")),
                        ("LoRA       ", adapters.LoRA(rank=4, targets=("fc1", "fc2")))):
        torch.manual_seed(0)
        model = spec.apply(copy.deepcopy(task.pretrained_model()).to(device))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(steps):
            batch = torch.randint(len(data), (64,), generator=gen).to(device)
            loss = nn.functional.cross_entropy(model(data.x[batch]), data.y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        print(f"digits mirror, {label} r=4 (fc1, fc2), lr 1e-3: first-{steps}-step mean loss "
              f"{sum(losses) / steps:.4f}, step {steps} loss {losses[-1]:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    speed(device, args.reps)
    pissa_init(device, args.reps)
    first_steps(device)


if __name__ == "__main__":
    main()
