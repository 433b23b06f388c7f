"""Merging that can succeed: ``digits-multitask`` with one head per subtask over a shared trunk.

Three subtasks (mirror/labels+3, flip/+5, transpose/+7) are each fine-tuned from the pretrained
digits MLP (full fine-tuning, lr 3e-4, 300 steps; each subtask trains its own head); the trunks
are merged by the recipe's merge method and each subtask is evaluated with its own trained head
(see ``automl.tasks.digits.DigitsMultitask``). Merge settings are the papers' usual defaults, not
tuned: task arithmetic λ ∈ {0.5, 1} (Ilharco et al. pick λ on validation data in [0, 1]), TIES
density 0.2, λ = 1 (Yadav et al.'s default k = 20 %), DARE drop 0.5 then task arithmetic λ = 0.5
(``then="linear", scale=1.5`` over 3 models) or TIES. Reference rows: each subtask's own model
unmerged (the ceiling) and weight matching (trunks share the pretrained init, so the permutation
should be the identity). Where weight matching helps — independently trained models — is
measured on ``digits-seeds`` (Linear vs WeightMatching at H=256; see also studies.rebasin).

    python -m studies.merging [--small] [--seeds N]
"""
from __future__ import annotations

from pathlib import Path

import automl
from automl import adapters, merge
from automl.tasks import DigitsMultitask, DigitsSeedsTask
from studies._common import Report, main, mean, mean_sd

CLAIM = ("Task arithmetic (Ilharco et al., arXiv 2212.04089), TIES-Merging (Yadav et al., arXiv 2306.01708) "
         "and DARE (Yu et al., arXiv 2311.03099) each merge task-specific fine-tunes (shared pretrained "
         "init, per-task heads) better than the plain weight average (TIES paper, Table 1, T5/ViT: averaging "
         "well below TA, TIES best). Git Re-Basin: weight matching is what makes averaging independently "
         "trained models work.")
COLUMNS = ["task", "merge", "accuracy", "acc mirror", "acc flip", "acc transpose", "forgetting"]
SHIFTS = ("mirror", "flip", "transpose")


def run(small: bool = False, seeds: int = 5):
    steps = 60 if small else 300
    merges = [("Linear (plain average)", merge.Linear()),
              ("TaskArithmetic λ=0.5", merge.TaskArithmetic(scale=0.5)),
              ("TaskArithmetic λ=1", merge.TaskArithmetic(scale=1.0)),
              ("TIES density 0.2 λ=1", merge.TIES(density=0.2, scale=1.0)),
              ("DARE p=0.5 → TA λ=0.5", merge.DARE(drop=0.5, then="linear", scale=1.5)),
              ("DARE p=0.5 → TIES", merge.DARE(drop=0.5, then="ties")),
              ("WeightMatching → Linear", merge.WeightMatching())]
    report = Report("merging", CLAIM, f"digits-multitask (per-subtask heads), full fine-tuning lr 3e-4, {steps} steps × "
                    f"batch 64, {seeds} seeds (mean ± sd); digits-seeds H=256 from scratch lr 1e-3", COLUMNS)
    acc: dict[str, float] = {}
    recipe = lambda s, m=None: automl.Recipe(adapter=adapters.FullFineTune(), lr=3e-4, steps=steps, seed=s,  # noqa: E731
                                             **({"merge": m} if m is not None else {}))
    own = {sh: [automl.evaluate(recipe(s), task=DigitsMultitask((sh,), name=f"digits-{sh}-own-head"))
                .metrics["accuracy"] for s in range(seeds)] for sh in SHIFTS}
    per_seed = [mean([own[sh][s] for sh in SHIFTS]) for s in range(seeds)]
    report.rows.append({"task": "digits-multitask", "merge": "none: each subtask's own model", "accuracy": mean_sd(per_seed),
                        **{f"acc {sh}": mean_sd(own[sh]) for sh in SHIFTS}, "forgetting": "—"})
    for label, m in merges:
        runs = [automl.evaluate(recipe(s, m), task="digits-multitask").metrics for s in range(seeds)]
        acc[label] = mean([r["accuracy"] for r in runs])
        report.rows.append({"task": "digits-multitask", "merge": label, "accuracy": mean_sd([r["accuracy"] for r in runs]),
                            **{f"acc {sh}": mean_sd([r[f"accuracy/{sh}"] for r in runs]) for sh in SHIFTS},
                            "forgetting": mean_sd([r["forgetting"] for r in runs])})
    base = acc["Linear (plain average)"]
    for label in ("TaskArithmetic λ=0.5", "TaskArithmetic λ=1", "TIES density 0.2 λ=1", "DARE p=0.5 → TA λ=0.5",
                  "DARE p=0.5 → TIES"):
        report.check(f"{label} beats the plain average ({acc[label]:.3f} vs {base:.3f})", acc[label] > base)
    seeds_acc = {}
    for label, m in (("Linear (plain average)", merge.Linear()), ("WeightMatching → Linear", merge.WeightMatching())):
        runs = [automl.evaluate(automl.Recipe(adapter=adapters.FullFineTune(), lr=1e-3, steps=steps, seed=s, merge=m),
                                task=DigitsSeedsTask(seeds=(100 + 2 * s, 101 + 2 * s), name="digits-seeds-pairs"))
                .metrics for s in range(seeds)]
        seeds_acc[label] = mean([r["accuracy"] for r in runs])
        report.rows.append({"task": "digits-seeds (H=256, from scratch)", "merge": label,
                            "accuracy": mean_sd([r["accuracy"] for r in runs]), "forgetting": "—"})
    report.check(f"weight matching helps independently trained models (digits-seeds: {seeds_acc['WeightMatching → Linear']:.3f} "
                 f"vs plain average {seeds_acc['Linear (plain average)']:.3f})",
                 seeds_acc["WeightMatching → Linear"] > seeds_acc["Linear (plain average)"])
    report.notes.append(f"weight matching on digits-multitask (shared init) vs plain average: "
                        f"{acc['WeightMatching → Linear']:.3f} vs {base:.3f}")

    def figure(path: Path):  # draws and returns the figure (saved by Report.save)
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3.5))
        labels = list(acc)
        ax.barh(labels, [acc[k] for k in labels])
        ax.axvline(mean(per_seed), color="k", ls="--", label="own models (no merge)")
        ax.set_xlabel(f"mean accuracy over 3 subtasks ({seeds} seeds)")
        ax.set_title("digits-multitask: merged trunk + own heads")
        ax.legend(fontsize=8)
        return fig

    return report, figure


if __name__ == "__main__":
    main("merging", __doc__, run)
