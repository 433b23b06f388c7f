"""PiSSA initialisation on a real model: exact SVD vs the fast randomized SVD, measured in one run.

all-MiniLM-L6-v2 (the built-in ``minilm-sentiment`` task; offline), PiSSA rank 8 on its 36
encoder matrices (384×384, 1536×384, 384×1536):

1. time to apply PiSSA to the whole model, and per layer shape, for three arms: the exact SVD
   (``init="svd"``), "before" — ``torch.svd_lowrank(W, q=r, niter)``, the fast path up to commit
   0a59f56, run here by swapping it in — and "after", our randomized SVD
   (:mod:`automl.adapters.rsvd`, ``init="svd_lowrank"``); ratios exact ÷ fast (goal ≥ 20×);
2. the first-steps training loss (mean of steps 1–N, batch 16, lr 1e-3, seed 0; the trainer's own
   loop) after each init, with LoRA at the same rank for scale;
3. the fast init's quality per layer: ‖W − U_r S_r V_rᵀ‖_F ÷ the optimum ‖W − W_r‖_F.

Timings are minima over interleaved rounds on one torch thread; they are noisy on a loaded
machine, so compare the ratios of one run only. Usage:
``python benchmarks/pissa_init.py [--niter 2] [--steps 20] [--rounds 5] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import time
from unittest import mock

import torch

import automl
from automl import adapters, tasks
from automl.adapters import lora
from automl.adapters.base import principal_svd
from automl.trainer import train

RANK, SCALING = 8, 2.0


def svd_lowrank_before(weight: torch.Tensor, rank: int, niter: int | None = None):
    """The fast path as it was: ``torch.svd_lowrank(W, q=r, niter)`` (exact SVD when niter is None)."""
    if niter is None:
        return principal_svd(weight, rank)
    u, s, v = torch.svd_lowrank(weight.detach().float(), q=rank, niter=niter)
    return u, s, v.t()


def arm(name: str, niter: int):
    """(adapter, context) of one arm; the context swaps the old fast path in for "before"."""
    if name == "exact":
        return adapters.PiSSA(rank=RANK), contextlib.nullcontext()
    spec = adapters.PiSSA(rank=RANK, init="svd_lowrank", niter=niter)
    if name == "before":
        return spec, mock.patch.object(lora, "principal_svd", svd_lowrank_before)
    return spec, contextlib.nullcontext()


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} on {torch.get_num_threads()} thread(s), load average {load:.1f}")


def whole_model(task, plan: dict, niter: int, rounds: int) -> dict[str, float]:
    base = task.pretrained_model()
    best = {name: float("inf") for name in ("exact", "before", "after")}
    for _ in range(rounds):  # interleaved: load drifts hit every arm alike
        for name in best:
            spec, context = arm(name, niter)
            model = copy.deepcopy(base)
            torch.manual_seed(0)
            with context:
                t0 = time.perf_counter()
                spec.apply(model, plan)
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def per_shape(task, plan: dict, niter: int, rounds: int) -> dict[tuple, dict[str, float]]:
    base = task.pretrained_model()
    layers: dict[tuple, torch.nn.Linear] = {}
    for name in plan:
        linear = base.get_submodule(name)
        layers.setdefault(tuple(linear.weight.shape), linear)
    result = {}
    for shape, linear in layers.items():
        best = {name: float("inf") for name in ("exact", "before", "after")}
        for _ in range(rounds):
            for name in best:
                fresh = copy.deepcopy(linear)
                with arm(name, niter)[1]:
                    t0 = time.perf_counter()
                    lora.LoraLinear(fresh, RANK, SCALING, init="pissa", niter=None if name == "exact" else niter)
                    best[name] = min(best[name], time.perf_counter() - t0)
        result[shape] = best
    return result


def first_steps(task, plan: dict, niter: int, steps: int) -> dict[str, list[float]]:
    sub = task.subtasks[0]
    recipe = automl.Recipe(adapter=adapters.LoRA(rank=RANK), steps=steps, batch_size=16, lr=1e-3, seed=0)
    losses: dict[str, list[float]] = {}
    arms = [("exact", *arm("exact", niter)), ("before", *arm("before", niter)), ("after", *arm("after", niter)),
            ("LoRA", adapters.LoRA(rank=RANK), contextlib.nullcontext())]
    for label, spec, context in arms:
        model = task.initial_model(sub)
        torch.manual_seed(recipe.seed)
        with context:
            spec.apply(model, plan)
        task.prepare(model, sub)
        curve: list[float] = []
        original = task.loss

        def recorded(m, batch, original=original, curve=curve):
            loss = original(m, batch)
            curve.append(float(loss))
            return loss

        with mock.patch.object(task, "loss", recorded):
            train(model, task, sub, recipe.clone(override={"adapter": spec}))
        losses[label] = curve
    return losses


@torch.no_grad()
def quality(task, plan: dict, niter: int) -> dict[str, list[float]]:
    base = task.pretrained_model()
    ratios: dict[str, list[float]] = {"before": [], "after": []}
    torch.manual_seed(0)
    for name in plan:
        w = base.get_submodule(name).weight.detach().float()
        optimum = torch.linalg.svdvals(w)[RANK:].square().sum().sqrt()
        for label, fn in (("before", svd_lowrank_before), ("after", principal_svd)):
            u, s, vh = fn(w, RANK, niter)
            ratios[label].append(float(torch.linalg.matrix_norm(w - (u * s) @ vh) / optimum))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--niter", type=int, default=2, help="subspace iterations of both fast arms")
    parser.add_argument("--steps", type=int, default=20, help="training steps of the first-steps loss")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (minimum taken)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = tasks.get("minilm-sentiment")
    pretrained = task.pretrained_model()
    plan = adapters.PiSSA(rank=RANK).plan(pretrained, task.adaptable_layers(pretrained))
    print(f"machine: {machine()}")
    print(f"all-MiniLM-L6-v2, PiSSA r={RANK} on {len(plan)} encoder matrices; fast arms at niter={args.niter}; "
          f"'before' = torch.svd_lowrank (0a59f56), 'after' = automl.adapters.rsvd")
    t = whole_model(task, plan, args.niter, args.rounds)
    print(f"whole model: exact {t['exact'] * 1e3:.0f} ms, before {t['before'] * 1e3:.1f} ms "
          f"({t['exact'] / t['before']:.1f}x), after {t['after'] * 1e3:.1f} ms ({t['exact'] / t['after']:.1f}x; "
          f"goal >= 20x); after is {t['before'] / t['after']:.1f}x faster than before")
    for shape, b in per_shape(task, plan, args.niter, args.rounds).items():
        print(f"  layer {shape[0]}x{shape[1]}: exact {b['exact'] * 1e3:.1f} ms, before {b['before'] * 1e3:.2f} ms "
              f"({b['exact'] / b['before']:.1f}x), after {b['after'] * 1e3:.2f} ms ({b['exact'] / b['after']:.1f}x)")
    ratios = quality(task, plan, args.niter)
    for label, values in ratios.items():
        print(f"  {label}: ||W - U_r S_r V_r^T||_F / optimum over layers: mean {statistics.mean(values):.4f}, "
              f"max {max(values):.4f}")
    for label, curve in first_steps(task, plan, args.niter, args.steps).items():
        print(f"first {args.steps} steps (batch 16, lr 1e-3, seed 0), {label:6s}: mean loss "
              f"{statistics.mean(curve):.4f}, step 1 {curve[0]:.4f}, step {args.steps} {curve[-1]:.4f}")


if __name__ == "__main__":
    main()
