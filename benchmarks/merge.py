"""Merging benchmark: weight matching vs naive averaging, and a search over merge strategies.

1. The Git Re-Basin setting (Ainsworth et al., 2023, Fig. 2): pairs of MLPs 64→256→256→10
   trained from scratch with different seeds on scikit-learn digits (stratified 70/30 split,
   standardized; 20 epochs AdamW lr 1e-3, wd 0.01, batch 64). For naive averaging and for
   weight matching: test-loss barrier on the linear path, accuracy of the midpoint, sweeps to
   converge, singular-value change and top-5 left singular-vector |cos| per layer.
2. The built-in ``digits-seeds`` task through ``automl.evaluate``: Linear vs WeightMatching.
3. ``digits-multitask``: a sweep over merge strategies (``pg.geno.Sweeping``), leaderboard with
   per-subtask accuracy.

Run from the repository root: ``python -m benchmarks.merge`` (about a minute on 2 CPU cores). All ratios come from one run.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import pyglove as pg
import torch
from torch import nn

import automl
from automl import adapters, merge
from automl.merge.rebasin import permute_state, spec_from_state
from automl.tasks.digits import PRETRAIN, digits_data, digits_mlp, pretrain

TOP = 5


def train_from_scratch(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    settings = dict(PRETRAIN, seed=seed)
    return pretrain(digits_mlp(), digits_data().split("train"), **settings)


@torch.no_grad()
def test_loss(model: nn.Module) -> float:
    test = digits_data().split("test")
    return float(nn.functional.cross_entropy(model(test.x), test.y))


@torch.no_grad()
def test_accuracy(model: nn.Module, state: dict[str, torch.Tensor]) -> float:
    probe = copy.deepcopy(model)
    probe.load_state_dict(state)
    test = digits_data().split("test")
    return float((probe(test.x).argmax(-1) == test.y).float().mean())


def rebasin(seeds: list[tuple[int, int]], points: int) -> None:
    print(f"== Git Re-Basin: MLP 64→256→256→10 from scratch on digits, test loss on {points} points ==")
    header = (f"{'seeds':>7} {'acc a':>6} {'acc b':>6} {'barrier naive':>14} {'barrier WM':>11} {'ratio':>7} "
              f"{'mid acc naive':>14} {'mid acc WM':>11} {'sweeps':>6} {'WM s':>6} {'max Δσ/σ1':>10}")
    print(header)
    cos_rows = []
    for seed_a, seed_b in seeds:
        model_a, model_b = train_from_scratch(seed_a), train_from_scratch(seed_b)
        a, b = model_a.state_dict(), model_b.state_dict()
        start = time.perf_counter()
        perm, sweeps = merge.WeightMatching(seed=0).match(a, b)
        seconds = time.perf_counter() - start
        matched = permute_state(spec_from_state(a), perm, b)
        naive = merge.loss_barrier(model_a, a, b, test_loss, points)
        wm = merge.loss_barrier(model_a, a, matched, test_loss, points)
        mid_naive = test_accuracy(model_a, merge.Linear().merge(a, [a, b]))
        mid_wm = test_accuracy(model_a, merge.WeightMatching().merge(a, [a, b]))
        sv = max(merge.singular_value_change(b, matched).values())
        print(f"{seed_a:>3},{seed_b:<3} {test_accuracy(model_a, a):6.3f} {test_accuracy(model_a, b):6.3f} "
              f"{naive:14.4f} {wm:11.4f} {naive / max(wm, 1e-12):6.1f}× {mid_naive:14.3f} {mid_wm:11.3f} "
              f"{sweeps:6d} {seconds:6.2f} {sv:10.2e}")
        before, after = merge.singular_alignment(a, b, TOP), merge.singular_alignment(a, matched, TOP)
        cos_rows.append((seed_a, seed_b, before, after))
    print(f"\ntop-{TOP} left singular-vector |cos| per layer, before → after weight matching")
    for seed_a, seed_b, before, after in cos_rows:
        print(f"{seed_a:>3},{seed_b:<3} " + "  ".join(f"{k}: {before[k]:.3f} → {after[k]:.3f}" for k in before))


def digits_seeds(steps: int) -> None:
    print(f"\n== digits-seeds via automl.evaluate (FullFineTune from random inits, {steps} steps) ==")
    for method in (merge.Linear(), merge.WeightMatching()):
        result = automl.evaluate(automl.Recipe(adapter=adapters.FullFineTune(), merge=method, steps=steps, lr=1e-3),
                                 task="digits-seeds")
        print(f"{method.label:>15}: merged accuracy {result.accuracy:.3f} "
              f"(seed1 {result.metrics['accuracy/seed1']:.3f}, seed2 {result.metrics['accuracy/seed2']:.3f})")


def multitask_search(steps: int) -> None:
    print(f"\n== digits-multitask: sweep over merge strategies (LoRA r=4, {steps} steps per subtask) ==")
    space = automl.Recipe(
        adapter=adapters.LoRA(rank=4), lr=3e-3, steps=steps,
        merge=pg.oneof([merge.Linear(), merge.TaskArithmetic(scale=0.3), merge.TaskArithmetic(scale=1.0),
                        merge.TIES(density=0.2), merge.TIES(density=0.5, sign="count"), merge.DARE(drop=0.5),
                        merge.DARE(drop=0.5, then="ties", scale=2.0), merge.WeightMatching()]))
    with tempfile.TemporaryDirectory() as tmp:
        study = automl.search(space, task="digits-multitask", algorithm=pg.geno.Sweeping(), n_trials=8,
                              study_name="merge-bench", storage=f"sqlite:///{tmp}/merge.db", progress=False)
        board = study.leaderboard()
        board["merge"] = [study.recipe(int(t)).merge.format(compact=True, hide_default_values=True) for t in board["trial"]]
    columns = ["trial", "score", "accuracy"] + sorted(c for c in board if c.startswith("accuracy/")) \
        + ["forgetting", "intruders", "merge"]
    print(board[columns].to_string(float_format=lambda v: f"{v:.3f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="seed pairs for the Git Re-Basin section")
    parser.add_argument("--points", type=int, default=11, help="interpolation points on the linear path")
    parser.add_argument("--steps", type=int, default=300, help="training steps per model in sections 2 and 3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rebasin([(2 * i + 1, 2 * i + 2) for i in range(args.pairs)], args.points)
    digits_seeds(args.steps)
    multitask_search(args.steps)


if __name__ == "__main__":
    main()
