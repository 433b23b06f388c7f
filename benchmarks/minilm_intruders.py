"""Full fine-tuning vs LoRA at ranks 1, 8, 64 on minilm-sentiment (the intruder-dimension paper's
central comparison on a real transformer): accuracy, forgetting (QA retrieval skill) and intruder
dimensions summed over the 36 encoder matrices, mean ± sd over seeds.

    python benchmarks/minilm_intruders.py [--steps 150] [--seeds 0 1 2]

LoRA uses α = 2r (a constant scale of 2, as in the paper's setting) at lr 1e-3; full fine-tuning
lr 1e-4; batch 16; one torch thread (CPU) unless CUDA is present.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import automl
from automl import adapters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = automl.tasks.get("minilm-sentiment")
    arms = [("full FT", adapters.FullFineTune(), 1e-4)]
    arms += [(f"LoRA r={r}", adapters.LoRA(rank=r, alpha=2.0 * r), 1e-3) for r in args.ranks]
    print(f"minilm-sentiment, {args.steps} steps × batch {args.batch_size}, seeds {args.seeds}; "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"cuda={torch.cuda.is_available()}; pretrained QA retrieval {task.pretrained_accuracy:.3f}", flush=True)
    print(f"{'arm':<12} {'accuracy':>15} {'forgetting':>15} {'intruders':>13} {'trainable':>10} {'s/trial':>8}")
    start = time.perf_counter()
    for label, adapter, lr in arms:
        runs = [automl.evaluate(automl.Recipe(adapter=adapter, lr=lr, steps=args.steps, batch_size=args.batch_size,
                                              seed=seed), task=task).metrics for seed in args.seeds]

        def stat(key: str, fmt: str = ".3f") -> str:
            values = [r[key] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"

        print(f"{label:<12} {stat('accuracy'):>15} {stat('forgetting'):>15} {stat('intruders', '.1f'):>13} "
              f"{int(runs[0]['trainable_params']):>10} {statistics.mean(r['seconds'] for r in runs):>8.0f}", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
