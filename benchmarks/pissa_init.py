"""PiSSA initialisation on a real model: exact SVD vs the fast randomized SVD, measured in one run.

all-MiniLM-L6-v2 (the built-in ``minilm-sentiment`` task; offline), PiSSA rank 8 on its 36
encoder matrices (384×384, 1536×384, 384×1536):

1. time to apply PiSSA to the whole model, and per layer shape: the exact SVD (``init="svd"``),
   "before" — ``torch.svd_lowrank(W, q=r, niter)``, the fast path up to commit 0a59f56, run here by
   swapping it in — and "after", our randomized block Krylov SVD (:mod:`automl.adapters.rsvd`,
   ``init="svd_lowrank"``), each fast arm at several ``niter``; ratios exact ÷ fast (goal ≥ 20×),
   wall and CPU time;
2. the fast inits' quality per layer: the top-r energy captured, ``Σ s_i² / Σ_{i≤r} σ_i²``;
3. the first-steps training loss (mean of steps 1–N, batch 16, lr 1e-3, seed 0; the trainer's own
   loop) after each init (fast inits: mean over sketch seeds), with LoRA at the same rank for scale.

Timings are minima over interleaved rounds on one torch thread; they are noisy on a loaded
machine, so compare the ratios of one run only. About 10 minutes on 2 busy CPU cores. Usage:
``python benchmarks/pissa_init.py [--niter 2 3 4] [--steps 20] [--rounds 5] [--seeds 3] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import time
from dataclasses import dataclass
from unittest import mock

import torch
from torch import nn

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


@dataclass(frozen=True)
class Arm:
    """One way to initialise PiSSA: ``niter`` None is the exact SVD; ``before`` swaps the old fast
    path (``torch.svd_lowrank``) in for ours."""

    niter: int | None = None
    before: bool = False

    @property
    def label(self) -> str:
        return "exact" if self.niter is None else f"{'before' if self.before else 'after'} niter={self.niter}"

    def adapter(self) -> adapters.PiSSA:
        return adapters.PiSSA(rank=RANK) if self.niter is None else adapters.PiSSA(rank=RANK, init="svd_lowrank",
                                                                                     niter=self.niter)

    def context(self):
        """Swaps ``torch.svd_lowrank`` in for the "before" arm (a fresh context on every call)."""
        return mock.patch.object(lora, "principal_svd", svd_lowrank_before) if self.before else contextlib.nullcontext()


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} on {torch.get_num_threads()} thread(s), load average {load:.1f}")


def timed(arms: list[Arm], rounds: int, run) -> dict[Arm, tuple[float, float]]:
    """The minimum (wall, CPU) seconds of ``run(arm)`` per arm over interleaved rounds (load
    drifts hit every arm alike; CPU time is this thread's, less sensitive to other processes)."""
    best = {a: (float("inf"), float("inf")) for a in arms}
    for _ in range(rounds):
        for a in arms:
            setup = run(a)
            with a.context():
                wall, cpu = time.perf_counter(), time.thread_time()
                setup()
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            best[a] = (min(best[a][0], wall), min(best[a][1], cpu))
    return best


def whole_model(task, plan: dict, arms: list[Arm], rounds: int) -> dict[Arm, tuple[float, float]]:
    def run(a: Arm):
        model = copy.deepcopy(task.pretrained_model())
        torch.manual_seed(0)
        return lambda: a.adapter().apply(model, plan)
    return timed(arms, rounds, run)


def per_shape(task, plan: dict, arms: list[Arm], rounds: int) -> dict[tuple, dict[Arm, tuple[float, float]]]:
    layers: dict[tuple, nn.Linear] = {}
    for name in plan:
        linear = task.pretrained_model().get_submodule(name)
        layers.setdefault(tuple(linear.weight.shape), linear)

    def run_on(linear: nn.Linear):
        def run(a: Arm):
            fresh = copy.deepcopy(linear)
            return lambda: lora.LoraLinear(fresh, RANK, SCALING, init="pissa", niter=a.niter)
        return run
    return {shape: timed(arms, rounds, run_on(linear)) for shape, linear in layers.items()}


def first_steps(task, plan: dict, arms: list[Arm], steps: int, seeds: int) -> dict[str, list[list[float]]]:
    """Training loss of steps 1..``steps`` per init (and LoRA), for each of ``seeds`` sketch seeds
    of the fast inits; the global RNG is reseeded after the init, so every run sees the same batches
    and dropout masks whichever init drew random sketches."""
    sub = task.subtasks[0]
    losses: dict[str, list[list[float]]] = {}
    runs = [(a.label, a.adapter(), a.context, seed) for a in arms for seed in range(1 if a.niter is None else seeds)]
    runs.append(("LoRA", adapters.LoRA(rank=RANK), contextlib.nullcontext, 0))
    for label, spec, context, seed in runs:
        model = task.initial_model(sub)
        torch.manual_seed(seed)
        with context():
            spec.apply(model, plan)
        task.prepare(model, sub)
        torch.manual_seed(0)
        curve: list[float] = []
        original = task.loss

        def recorded(m, batch, original=original, curve=curve):
            loss = original(m, batch)
            curve.append(loss.item())
            return loss

        recipe = automl.Recipe(adapter=spec, steps=steps, batch_size=16, lr=1e-3, seed=0)
        with mock.patch.object(task, "loss", recorded):
            train(model, task, sub, recipe)
        losses.setdefault(label, []).append(curve)
    return losses


@torch.no_grad()
def quality(task, plan: dict, arms: list[Arm]) -> dict[str, tuple[float, float]]:
    """Per fast arm, over the layers: the top-r energy captured, ``Σ s_i² / Σ σ_i²`` (1 = exact),
    mean and worst."""
    weights = [task.pretrained_model().get_submodule(name).weight.detach().float() for name in plan]
    optimum = [torch.linalg.svdvals(w)[:RANK].square().sum() for w in weights]
    out = {}
    for a in arms:
        if a.niter is None:
            continue
        torch.manual_seed(0)
        svd = svd_lowrank_before if a.before else principal_svd
        energy = [float(svd(w, RANK, a.niter)[1].square().sum() / best) for w, best in zip(weights, optimum)]
        out[a.label] = (statistics.mean(energy), min(energy))
    return out


def ratio(exact: tuple[float, float], fast: tuple[float, float]) -> str:
    return (f"{fast[0] * 1e3:7.1f} ms wall ({exact[0] / fast[0]:5.1f}x), {fast[1] * 1e3:7.1f} ms CPU "
            f"({exact[1] / fast[1]:5.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--niter", type=int, nargs="+", default=[2, 3, 4], help="subspace iterations of the fast arms")
    parser.add_argument("--steps", type=int, default=20, help="training steps of the first-steps loss")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (minimum taken)")
    parser.add_argument("--seeds", type=int, default=3, help="sketch seeds of the fast inits' first-steps loss")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = tasks.get("minilm-sentiment")
    pretrained = task.pretrained_model()
    plan = adapters.PiSSA(rank=RANK).plan(pretrained, task.adaptable_layers(pretrained))
    exact = Arm()
    arms = [exact] + [Arm(n, before) for n in args.niter for before in (True, False)]
    print(f"machine: {machine()}")
    print(f"all-MiniLM-L6-v2, PiSSA r={RANK} on {len(plan)} encoder matrices; 'before' = torch.svd_lowrank "
          f"(the fast path up to 0a59f56), 'after' = automl.adapters.rsvd; exact ÷ fast in parentheses (goal >= 20x)")
    t = whole_model(task, plan, arms, args.rounds)
    print(f"whole model ({args.rounds} interleaved rounds, minimum): exact {t[exact][0] * 1e3:.0f} ms wall, "
          f"{t[exact][1] * 1e3:.0f} ms CPU")
    energy = quality(task, plan, arms)
    for a in arms[1:]:
        print(f"  {a.label:15s} {ratio(t[exact], t[a])}; top-{RANK} energy captured mean {energy[a.label][0]:.4f}, "
              f"worst layer {energy[a.label][1]:.4f}")
    for shape, times in per_shape(task, plan, arms, args.rounds).items():
        print(f"layer {shape[0]}x{shape[1]}: exact {times[exact][0] * 1e3:.1f} ms wall, "
              f"{times[exact][1] * 1e3:.1f} ms CPU")
        for a in arms[1:]:
            print(f"  {a.label:15s} {ratio(times[exact], times[a])}")
    curves = first_steps(task, plan, arms, args.steps, args.seeds)
    print(f"first {args.steps} training steps of minilm-sentiment (batch 16, lr 1e-3, seed 0; same batches and "
          f"dropout masks in every arm; fast inits: mean over {args.seeds} sketch seeds, range in brackets):")
    for label, runs in curves.items():
        means = [statistics.mean(c) for c in runs]
        spread = f" [{min(means):.4f}, {max(means):.4f}]" if len(means) > 1 else ""
        last = statistics.mean(statistics.mean(c[-5:]) for c in runs)
        print(f"  {label:15s} mean loss {statistics.mean(means):.4f}{spread}, last 5 steps {last:.4f}")


if __name__ == "__main__":
    main()
