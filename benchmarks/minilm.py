"""Real-transformer costs on all-MiniLM-L6-v2 (the minilm-sentiment task), ratios measured in one run.

1. fwd+bwd step time of our LoRA and DoRA (r=8, all 36 encoder linears) ÷ peft's on the same
   BertModel and the same batches of tweets (batch 16, dynamic padding ≤ 48 tokens); interleaved,
   median of ``--reps`` (goal ≤ 1.0).
2. Where a minilm-sentiment trial's time goes (LoRA r=8, ``--steps`` steps of batch 16, the
   pretrained skill and SVDs already cached as in a running study): training, task evaluation
   (1,000 test tweets + QA retrieval), the spectral report of the 36 matrices, the rest.

Usage: ``python benchmarks/minilm.py [--device cuda] [--threads 1] [--reps 10] [--steps 60]``.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

import automl
from automl import adapters
from automl.spectral import DEFAULT_CACHE, spectral_report


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_ratio(task, device: torch.device, reps: int) -> None:
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(task.pretrained_model().backbone).to(device)
    targets = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)]
    batches = task.subtasks[0].train.random_batches(16, 0, torch.device("cpu"))
    batch = {k: v.to(device) for k, v in next(batches).items() if k != "labels"}

    def step(model) -> float:
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        out.float().square().mean().backward()
        sync(device)
        seconds = time.perf_counter() - t0
        for p in model.parameters():
            p.grad = None
        return seconds

    for name, ours_spec, config in (("LoRA", adapters.LoRA(rank=8), {}),
                                    ("DoRA", adapters.DoRA(rank=8), {"use_dora": True})):
        ours = ours_spec.apply(copy.deepcopy(base)).train()
        theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                                **config)).train()
        times: dict[str, list[float]] = {"ours": [], "peft": []}
        for i in range(reps + 2):  # interleaved, two warm-up rounds dropped
            for label, model in (("ours", ours), ("peft", theirs)):
                t = step(model)
                if i >= 2:
                    times[label].append(t)
        mine, peft_s = statistics.median(times["ours"]), statistics.median(times["peft"])
        print(f"MiniLM {name} r=8 fwd+bwd, batch 16 × {batch['input_ids'].shape[1]} tokens: ours {mine * 1e3:.0f} ms, "
              f"peft {peft_s * 1e3:.0f} ms, ours/peft = {mine / peft_s:.3f} (goal <= 1.0)", flush=True)


def trial_shares(task, device: torch.device, steps: int) -> None:
    recipe = automl.Recipe(adapter=adapters.LoRA(rank=8), steps=steps, batch_size=16)
    automl.evaluate(recipe.clone(override={"steps": 1}), task=task, device=device)  # warm caches (skill, SVDs)
    result = automl.evaluate(recipe, task=task, device=device)
    pretrained = task.pretrained_model().to(device)
    layers = task.adaptable_layers(pretrained)
    t0 = time.perf_counter()
    for sub in task.subtasks:
        task.evaluate(result.model, sub)
    task.pretrain_metrics(result.model)
    evaluation = time.perf_counter() - t0
    t0 = time.perf_counter()
    spectral_report(pretrained, result.model, layers=layers, cache=DEFAULT_CACHE)
    spectral = time.perf_counter() - t0
    total, train = result.seconds, result.train_seconds
    print(f"minilm-sentiment trial, LoRA r=8, {steps} steps: {total:.1f} s = training {train / total:.1%}, "
          f"evaluation {evaluation / total:.1%}, spectral report {spectral / total:.1%} "
          f"({len(layers)} matrices, {spectral:.2f} s), rest {(total - train - evaluation - spectral) / total:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name}), {torch.get_num_threads()} CPU threads, torch {torch.__version__}", flush=True)
    task = automl.tasks.get("minilm-sentiment")
    step_ratio(task, device, args.reps)
    trial_shares(task, device, args.steps)


if __name__ == "__main__":
    main()
