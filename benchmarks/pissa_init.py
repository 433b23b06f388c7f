"""PiSSA initialisation on a real model: exact SVD vs the fast randomized SVD, measured in one run.

all-MiniLM-L6-v2 (the built-in ``minilm-sentiment`` task; offline), PiSSA rank 8 on its 36
encoder matrices (24 × 384×384, 6 × 1536×384, 6 × 384×1536):

1. time to apply PiSSA to the whole model (SVDs, residuals, wrapping), exact SVD (``init="svd"``)
   vs the fast init (``init="svd_lowrank"``) at several ``niter``: "after", this package's
   :mod:`automl.adapters.rsvd` (layers of one shape batched), and "before", the one-layer-at-a-time
   block Krylov SVD of commit 4f928d8 (:func:`svd_before`, re-implemented here and swapped in);
   ratios exact ÷ fast (goal ≥ 20×), wall and CPU time; then per layer shape, the SVDs alone;
2. the fast inits' quality: the top-r energy captured, ``Σ s_i² / Σ_{i≤r} σ_i²`` (1 = exact), mean
   and worst layer over the sketch seeds;
3. the first-steps training loss (mean of steps 1..N, batch 16, lr 1e-3; the trainer's own loop)
   for several training-data seeds (batches and dropout masks), exact init, LoRA at the same rank,
   and each fast init over several sketch seeds. **Criterion** for "the same first-steps loss": the
   mean over data seeds of the paired difference (fast, averaged over sketch seeds, minus exact on
   the same batches) lies within ``--tolerance`` (default 0.005: a quarter of what exact PiSSA gains
   over LoRA in these steps, ~0.02, and an eighth of how much the loss moves between data seeds,
   ~0.04). Its standard error over data seeds is printed next to it.

Timings are minima over interleaved rounds on one torch thread; they are noisy on a loaded
machine, so compare the ratios of one run only. About 10 minutes on 2 busy CPU cores
(``--quick``: about 2). Usage: ``python benchmarks/pissa_init.py [--quick] [--niter 2 3 4]
[--steps 20] [--rounds 15] [--seeds 3] [--data-seeds 3] [--tolerance 0.005] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from unittest import mock

import torch

import automl
from automl import adapters, tasks
from automl.adapters import pissa, rsvd
from automl.adapters.base import principal_svd
from automl.trainer import train

RANK = 8


def svd_before(weight: torch.Tensor, rank: int, niter: int, oversample: int = 4):
    """The fast path before this change (commit 4f928d8, ``rsvd.randomized_svd``): the same block
    Krylov method one layer at a time — sketch on the output side, Householder QR per block, two
    block Gram–Schmidt passes, the small SVD from the Gram matrix — as the reference arm."""
    w = weight.detach().float()
    out_features, in_features = w.shape
    k = min(rank + oversample, out_features, in_features)
    if k * max(niter, 1) >= min(out_features, in_features):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank]

    def orth_rows(y):
        return torch.linalg.qr(y.mT).Q.mT

    def gram_svd(y):
        evals, evecs = torch.linalg.eigh(y @ y.mT)
        u = evecs[:, -rank:].flip(-1)
        s = evals[-rank:].flip(-1).clamp(min=0).sqrt()
        floor = s[:1] * torch.finfo(y.dtype).eps + torch.finfo(y.dtype).tiny
        return u, s, (u.mT @ y) / torch.maximum(s, floor)[:, None]

    y = torch.randn(k, out_features) @ w
    if niter == 0:
        q = orth_rows(y)
        v_small, s, ut = gram_svd(q @ w.mT)
        return ut.mT, s, v_small.mT @ q
    basis, projection = w.new_empty(k * niter, out_features), w.new_empty(k * niter, in_features)
    for i in range(niter):
        x = y @ w.mT
        if i:
            done = basis[: i * k]
            x.addmm_(x @ done.mT, done, alpha=-1)
            x.addmm_(x @ done.mT, done, alpha=-1)
        z = basis[i * k: (i + 1) * k]
        z.copy_(orth_rows(x))
        y = torch.mm(z, w, out=projection[i * k: (i + 1) * k])
    u_small, s, vh = gram_svd(projection)
    return basis.mT @ u_small, s, vh


def iter_before(weights, ranks, niter):
    """:func:`rsvd.iter_randomized_svds`'s contract, one layer after another with :func:`svd_before`."""
    for i, (w, r) in enumerate(zip(weights, ranks)):
        yield i, svd_before(w, r, niter)


@dataclass(frozen=True)
class Arm:
    """One way to initialise PiSSA: ``niter`` None is the exact SVD; ``before`` swaps the
    one-layer-at-a-time fast path of 4f928d8 in for ours."""

    niter: int | None = None
    before: bool = False

    @property
    def label(self) -> str:
        return "exact" if self.niter is None else f"{'before' if self.before else 'after'} niter={self.niter}"

    def adapter(self) -> adapters.PiSSA:
        return adapters.PiSSA(rank=RANK) if self.niter is None else adapters.PiSSA(rank=RANK, init="svd_lowrank",
                                                                                     niter=self.niter)

    def context(self):
        """Swaps the "before" fast path in (a fresh context on every call)."""
        return mock.patch.object(pissa, "iter_randomized_svds", iter_before if self.before else rsvd.iter_randomized_svds)

    def svds(self, weights: list[torch.Tensor]) -> list[tuple]:
        """This arm's top-r factors of ``weights`` (no adapter)."""
        if self.niter is None:
            return [principal_svd(w, RANK) for w in weights]
        if self.before:
            return [svd_before(w, RANK, self.niter) for w in weights]
        return rsvd.randomized_svds(weights, RANK, self.niter)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} on {torch.get_num_threads()} thread(s), load average {load:.1f}")


def timed(arms: list[Arm], rounds: int, run, exact_rounds: int) -> dict[Arm, tuple[float, float]]:
    """The minimum (wall, CPU) seconds of ``run(arm)`` per arm over interleaved rounds (load drifts
    hit every arm alike; CPU time is this thread's, less sensitive to other processes). The exact
    arm, ~20× slower than the rest, runs in the first ``exact_rounds`` rounds only."""
    best = {a: (float("inf"), float("inf")) for a in arms}
    for r in range(rounds):
        for a in arms:
            if a.niter is None and r >= exact_rounds:
                continue
            setup = run(a)
            with a.context():
                torch.manual_seed(0)
                wall, cpu = time.perf_counter(), time.thread_time()
                setup()
                wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            best[a] = (min(best[a][0], wall), min(best[a][1], cpu))
    return best


def whole_model(task, plan: dict, arms: list[Arm], rounds: int, exact_rounds: int):
    def run(a: Arm):
        model = copy.deepcopy(task.pretrained_model())
        spec = a.adapter()
        return lambda: spec.apply(model, plan)
    return timed(arms, rounds, run, exact_rounds)


def per_shape(weights: list[torch.Tensor], arms: list[Arm], rounds: int, exact_rounds: int):
    """The SVDs alone (no residual, no wrapping) of all layers of each shape, per arm."""
    shapes: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for w in weights:
        shapes[tuple(w.shape)].append(w)
    return {shape: (len(ws), timed(arms, rounds, lambda a, ws=ws: (lambda: a.svds(ws)), exact_rounds))
            for shape, ws in shapes.items()}


@torch.no_grad()
def quality(weights: list[torch.Tensor], arms: list[Arm], seeds: int) -> dict[str, tuple[float, float]]:
    """Per fast arm: the top-r energy captured, ``Σ s_i² / Σ σ_i²`` (1 = exact), mean and worst
    over layers and sketch seeds."""
    optimum = [torch.linalg.svdvals(w)[:RANK].square().sum() for w in weights]
    out = {}
    for a in arms:
        if a.niter is None:
            continue
        energy = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            energy += [float(f[1].square().sum() / best) for f, best in zip(a.svds(weights), optimum)]
        out[a.label] = (statistics.mean(energy), min(energy))
    return out


def first_steps(task, plan: dict, specs: list[tuple[str, object, int]], steps: int, data_seeds: int):
    """Mean training loss of steps 1..``steps``: ``{label: {data seed: [one per sketch seed]}}``.
    ``specs`` are (label, adapter, sketch seeds); the global RNG is reseeded with the data seed
    after the init, so every run of a data seed sees the same batches and dropout masks."""
    sub = task.subtasks[0]
    losses: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for data_seed in range(data_seeds):
        for label, spec, sketch_seeds in specs:
            for sketch_seed in range(sketch_seeds):
                model = task.initial_model(sub)
                torch.manual_seed(sketch_seed)
                spec.apply(model, plan)
                task.prepare(model, sub)
                torch.manual_seed(data_seed)
                curve: list[float] = []
                original = task.loss

                def recorded(m, batch, original=original, curve=curve):
                    loss = original(m, batch)
                    curve.append(loss.item())
                    return loss

                recipe = automl.Recipe(adapter=spec, steps=steps, batch_size=16, lr=1e-3, seed=data_seed)
                with mock.patch.object(task, "loss", recorded):
                    train(model, task, sub, recipe)
                losses[label][data_seed].append(statistics.mean(curve))
    return losses


def paired(losses: dict[int, list[float]], exact: dict[int, list[float]]) -> tuple[float, float]:
    """Mean over data seeds of (mean over sketch seeds − exact), and its standard error."""
    diffs = [statistics.mean(losses[d]) - exact[d][0] for d in exact]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return statistics.mean(diffs), se


def ratio(exact: tuple[float, float], fast: tuple[float, float], scale: float = 1.0) -> str:
    return (f"{fast[0] * scale * 1e3:7.2f} ms wall ({exact[0] / fast[0]:5.1f}x), {fast[1] * scale * 1e3:7.2f} ms CPU "
            f"({exact[1] / fast[1]:5.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, seeds and niter (about 2 minutes)")
    parser.add_argument("--niter", type=int, nargs="+", default=None, help="block Krylov steps of the fast arms")
    parser.add_argument("--steps", type=int, default=20, help="training steps of the first-steps loss")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (minimum taken)")
    parser.add_argument("--seeds", type=int, default=None, help="sketch seeds per fast init and data seed")
    parser.add_argument("--data-seeds", type=int, default=None, help="training-data seeds of the first-steps loss")
    parser.add_argument("--tolerance", type=float, default=0.005, help="largest |mean paired loss difference|")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    niters = args.niter or ([2] if args.quick else [2, 3, 4])
    rounds = args.rounds or (5 if args.quick else 15)
    seeds = args.seeds or (2 if args.quick else 3)
    data_seeds = args.data_seeds or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = tasks.get("minilm-sentiment")
    pretrained = task.pretrained_model()
    plan = adapters.PiSSA(rank=RANK).plan(pretrained, task.adaptable_layers(pretrained))
    weights = [pretrained.get_submodule(name).weight.detach() for name in plan]
    exact = Arm()
    arms = [exact] + [Arm(n, before) for n in niters for before in (True, False)]
    print(f"machine: {machine()}")
    print(f"all-MiniLM-L6-v2, PiSSA r={RANK} on {len(plan)} encoder matrices; 'before' = the one-layer-at-a-time "
          f"block Krylov SVD of 4f928d8, 'after' = automl.adapters.rsvd (batched by shape); exact ÷ fast in "
          f"parentheses (goal >= 20x)")
    exact_rounds = min(rounds, 3)
    t = whole_model(task, plan, arms, rounds, exact_rounds)
    print(f"whole model, PiSSA.apply ({rounds} interleaved rounds, exact {exact_rounds}; minimum): exact "
          f"{t[exact][0] * 1e3:.0f} ms wall, {t[exact][1] * 1e3:.0f} ms CPU")
    energy = quality(weights, arms, seeds)
    for a in arms[1:]:
        print(f"  {a.label:15s} {ratio(t[exact], t[a])}; top-{RANK} energy captured mean {energy[a.label][0]:.4f}, "
              f"worst layer {energy[a.label][1]:.4f}")
    print("per layer shape, the SVDs alone (all layers of the shape together), per layer:")
    for shape, (count, times) in per_shape(weights, arms, rounds, exact_rounds).items():
        print(f"layer {shape[0]}x{shape[1]} (x{count}): exact {times[exact][0] / count * 1e3:.2f} ms wall, "
              f"{times[exact][1] / count * 1e3:.2f} ms CPU")
        for a in arms[1:]:
            print(f"  {a.label:15s} {ratio(times[exact], times[a], 1 / count)}")
    specs = [("exact", exact.adapter(), 1), ("LoRA", adapters.LoRA(rank=RANK), 1)]
    specs += [(f"fast niter={n}", Arm(n).adapter(), seeds) for n in niters]
    losses = first_steps(task, plan, specs, args.steps, data_seeds)
    print(f"first {args.steps} training steps of minilm-sentiment (batch 16, lr 1e-3): mean loss per data seed "
          f"(same batches and dropout masks in every arm of a seed; fast inits: mean [range] over {seeds} sketch seeds)")
    for label, by_seed in losses.items():
        cells = []
        for d, values in by_seed.items():
            spread = f" [{min(values):.4f}, {max(values):.4f}]" if len(values) > 1 else ""
            cells.append(f"seed {d}: {statistics.mean(values):.4f}{spread}")
        print(f"  {label:15s} " + "; ".join(cells))
    lora_gain, _ = paired(losses["LoRA"], losses["exact"])
    print(f"criterion: |mean over {data_seeds} data seed(s) of (fast − exact)| <= {args.tolerance} "
          f"(exact PiSSA's gain over LoRA here: {lora_gain:.4f})")
    passing = []
    for n in niters:
        diff, se = paired(losses[f"fast niter={n}"], losses["exact"])
        ok = abs(diff) <= args.tolerance
        passing += [n] if ok else []
        print(f"  fast niter={n}: {diff:+.4f} (standard error {se:.4f}) -> {'same loss' if ok else 'differs'}; "
              f"whole-model ratio {t[exact][0] / t[Arm(n)][0]:.1f}x wall, {t[exact][1] / t[Arm(n)][1]:.1f}x CPU")
    default = adapters.PiSSA(rank=RANK, init="svd_lowrank").niter
    print(f"smallest niter with the same loss: {min(passing) if passing else 'none'}; PiSSA's default niter: {default}")


if __name__ == "__main__":
    main()
