"""Cost of ``automl.spectral.spectral_report``: cold vs warm SVD cache, exact vs fast, and its
share of a digits trial (goal: ≤ 3 % warm). With ``--mitigation``: the accuracy / forgetting
trade-off of :class:`automl.mitigation.Mitigation` over λ on digits (paper Fig. 8's direction).

Shapes: the digits MLP (64→256→256→10) and a MiniLM-like encoder (6 layers of q, k, v, o
384×384, intermediate 1536×384, output 384×1536). "cold": an empty cache folder; "warm
(memory)": the same cache again; "warm (disk)": a new cache on the same folder, i.e. a new
trial in another process. Every ratio is measured in this one run. Run:
``python benchmarks/spectral.py`` (single-threaded torch, like one trial on a shared machine).
"""
from __future__ import annotations

import copy
import os
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AUTOML_STUDIES", tempfile.mkdtemp(prefix="automl-bench-"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import automl  # noqa: E402
from automl import spectral, trainer  # noqa: E402
from automl.mitigation import Mitigation  # noqa: E402
from automl.spectral import SVDCache, batched_svd, spectral_report  # noqa: E402

torch.set_num_threads(1)
REPEATS = 5


def digits_like() -> nn.Module:
    return nn.Sequential(OrderedDict(fc1=nn.Linear(64, 256), act1=nn.ReLU(), fc2=nn.Linear(256, 256),
                                     act2=nn.ReLU(), head=nn.Linear(256, 10)))


def minilm_like() -> nn.Module:
    def block() -> nn.Module:
        return nn.ModuleDict(OrderedDict(q=nn.Linear(384, 384), k=nn.Linear(384, 384), v=nn.Linear(384, 384),
                                         o=nn.Linear(384, 384), intermediate=nn.Linear(384, 1536),
                                         output=nn.Linear(1536, 384)))
    return nn.ModuleList([block() for _ in range(6)])


def tuned_copy(model: nn.Module, rank: int = 4) -> nn.Module:
    """The model with a LoRA-like rank-``rank`` update on every linear layer."""
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for m in tuned.modules():
            if isinstance(m, nn.Linear):
                m.weight += 0.05 * torch.randn(m.out_features, rank) @ torch.randn(rank, m.in_features)
    return tuned


def seconds(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cache_rows(name: str, model: nn.Module) -> None:
    tuned = tuned_copy(model)
    for fast in (False, True):
        folder = Path(tempfile.mkdtemp(prefix="svd-"))
        cold_cache = SVDCache(folder)
        start = time.perf_counter()
        spectral_report(model, tuned, cache=cold_cache, fast=fast)
        cold = time.perf_counter() - start
        memory = seconds(lambda: spectral_report(model, tuned, cache=cold_cache, fast=fast))
        disk = seconds(lambda: spectral_report(model, tuned, cache=SVDCache(folder), fast=fast))
        mode = "fast" if fast else "exact"
        print(f"{name:<14} {mode:<6} cold {cold * 1e3:8.1f} ms   warm (memory) {memory * 1e3:7.1f} ms   "
              f"warm (disk) {disk * 1e3:7.1f} ms   cold/warm {cold / memory:5.1f}x")


def batching_row(n: int = 24) -> None:
    ws = [torch.randn(384, 384) for _ in range(n)]
    batched = seconds(lambda: batched_svd(ws), 3)
    loop = seconds(lambda: [batched_svd([w]) for w in ws], 3)
    print(f"{n} SVDs of 384×384 on CPU: batched {batched * 1e3:.0f} ms, one by one {loop * 1e3:.0f} ms "
          f"(one by one / batched = {loop / batched:.2f}; on the CPU LAPACK decomposes one matrix at a "
          f"time either way; a GPU batched call is not measured here)")


def trial_share() -> None:
    """Run digits trials with the trainer's own spectral_report call timed."""
    spent: list[float] = []
    original = trainer.spectral_report

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    trainer.spectral_report = timed
    recipe = automl.Recipe(adapter=automl.adapters.LoRA(rank=4))
    spectral.DEFAULT_CACHE = trainer.DEFAULT_CACHE = SVDCache(Path(tempfile.mkdtemp(prefix="svd-")))
    automl.evaluate(recipe, "digits")                      # builds the pretrained model, cold SVD cache
    cold_share = spent[-1]
    results = [automl.evaluate(recipe.clone(override={"seed": s}), "digits") for s in range(1, 4)]
    trainer.spectral_report = original
    warm = statistics.median(spent[1:])
    trial = statistics.median(r.seconds for r in results)
    print(f"digits trial (LoRA r=4, 300 steps): {trial:.2f} s; spectral_report cold {cold_share * 1e3:.1f} ms, "
          f"warm {warm * 1e3:.1f} ms = {100 * warm / trial:.2f} % of the trial (goal ≤ 3 %)")


def mitigation_tradeoff(seeds: range = range(3)) -> None:
    """Task accuracy, pretraining accuracy and hidden-layer intruders after mitigating each
    trained model with λ ∈ {1, 0.75, 0.5} (means over ``seeds``)."""
    task = automl.tasks.get("digits")
    pretrained = task.pretrained_model()
    hidden = ["fc1", "fc2"]
    print(f"{'method':<10} {'λ':>5} {'accuracy':>8} {'pretrain acc':>12} {'intruders':>9}   (mean of {len(seeds)} seeds)")
    for name, adapter, lr in [("LoRA r=1", automl.adapters.LoRA(rank=1), 3e-3),
                              ("LoRA r=8", automl.adapters.LoRA(rank=8), 1e-3),
                              ("full FT", automl.adapters.FullFineTune(), 3e-4)]:
        models = [automl.evaluate(automl.Recipe(adapter=adapter, lr=lr, steps=600, seed=s), task).model for s in seeds]
        for scale in (1.0, 0.75, 0.5):
            rows = []
            for model in models:
                m = Mitigation(scale=scale).apply(pretrained, copy.deepcopy(model), hidden)
                rows.append((task.accuracy(m, task.subtasks[0].test), task.accuracy(m, task.pretrain_data),
                             sum(r.intruders for r in spectral_report(pretrained, m, hidden).values())))
            means = [statistics.mean(column) for column in zip(*rows)]
            print(f"{name:<10} {scale:>5} {means[0]:>8.3f} {means[1]:>12.3f} {means[2]:>9.2f}")


if __name__ == "__main__":
    if "--mitigation" in sys.argv:
        mitigation_tradeoff()
        sys.exit()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {REPEATS}")
    cache_rows("digits MLP", digits_like())
    cache_rows("MiniLM-like", minilm_like())
    batching_row()
    trial_share()
