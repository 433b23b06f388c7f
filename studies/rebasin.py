"""(c) Weight matching (Git Re-Basin; Ainsworth et al., 2023, arXiv 2209.04836) and its analysis
(Ito et al., "Analysis of Linear Mode Connectivity via Permutation-Based Weight Matching").

Per width H: two MLPs 64→H→H→10 trained from scratch with different seeds on digits
(``DigitsSeedsTask(hidden=H)``, full training, AdamW lr 1e-3, batch 64), merged by the plain
average (``merge.Linear``) and by ``merge.WeightMatching()`` (permute, then average). The trainer's
merge diagnostics give the test-loss barrier along the linear path before/after matching, the
top-5 left singular-vector |cos| of each layer before/after, and the largest relative change of
singular values the permutation made.

    python -m studies.rebasin [--small] [--seeds N]
"""
from __future__ import annotations

from pathlib import Path

import automl
from automl import adapters, merge
from automl.tasks import DigitsSeedsTask
from studies._common import Report, main, mean, mean_sd

CLAIM = ("Ainsworth et al. (Git Re-Basin, arXiv 2209.04836): permuting hidden units by weight matching "
         "removes (nearly) all of the loss barrier between independently trained models (their MLPs on "
         "MNIST: barrier ≈ 0 after matching, growing width helps); Ito et al.: matching aligns the "
         "singular vectors with large singular values and leaves singular values unchanged "
         "(a permutation). reference.md's digits check: H=256 barrier 0.43 → 0.006.")
COLUMNS = ["width", "barrier naive", "barrier matched", "align fc1 before", "align fc1 after",
           "align fc2 before", "align fc2 after", "sv change", "acc Linear", "acc WM", "sweeps"]


def run(small: bool = False, seeds: int = 5):
    steps = 60 if small else 300
    widths = (16, 64) if small else (32, 128, 512)
    report = Report("rebasin", CLAIM, f"digits-seeds, two models from scratch per pair, {steps} steps × batch 64, "
                    f"widths {widths}, {seeds} seed pairs (mean ± sd); barrier on test loss, 5 points", COLUMNS)
    per_width = {}
    for h in widths:
        wm, lin = [], []
        for s in range(seeds):
            task = DigitsSeedsTask(seeds=(100 + 2 * s, 101 + 2 * s), name=f"digits-seeds-h{h}", hidden=h)
            recipe = automl.Recipe(adapter=adapters.FullFineTune(), lr=1e-3, steps=steps, seed=s)
            wm.append(automl.evaluate(recipe.clone(override={"merge": merge.WeightMatching()}), task=task).metrics)
            lin.append(automl.evaluate(recipe.clone(override={"merge": merge.Linear()}), task=task).metrics)
        per_width[h] = wm
        col = lambda rows, k, d=3: mean_sd([r[k] for r in rows], d)  # noqa: E731
        report.rows.append({"width": h, "barrier naive": col(wm, "merge/barrier"),
                            "barrier matched": col(wm, "merge/barrier_matched"),
                            "align fc1 before": col(wm, "merge/alignment/fc1", 2),
                            "align fc1 after": col(wm, "merge/alignment_matched/fc1", 2),
                            "align fc2 before": col(wm, "merge/alignment/fc2", 2),
                            "align fc2 after": col(wm, "merge/alignment_matched/fc2", 2),
                            "sv change": f"{max(r['merge/sv_change'] for r in wm):.1e} (max)",
                            "acc Linear": col(lin, "accuracy"), "acc WM": col(wm, "accuracy"),
                            "sweeps": col(wm, "merge/sweeps", 1)})
        b0, b1 = mean([r["merge/barrier"] for r in wm]), mean([r["merge/barrier_matched"] for r in wm])
        report.check(f"H={h}: matching lowers the barrier ({b0:.3f} → {b1:.3f})", b1 < b0)
        for layer in ("fc1", "fc2"):
            a0 = mean([r[f"merge/alignment/{layer}"] for r in wm])
            a1 = mean([r[f"merge/alignment_matched/{layer}"] for r in wm])
            report.check(f"H={h}: top-5 singular vectors of {layer} align better after matching ({a0:.2f} → {a1:.2f})",
                         a1 > a0)
        sv = max(r["merge/sv_change"] for r in wm)
        report.check(f"H={h}: singular values unchanged by the permutation (max relative change {sv:.1e})", sv < 1e-4)
        report.check(f"H={h}: the matched average is more accurate than the plain average "
                     f"({mean([r['accuracy'] for r in wm]):.3f} vs {mean([r['accuracy'] for r in lin]):.3f})",
                     mean([r["accuracy"] for r in wm]) > mean([r["accuracy"] for r in lin]))

    def figure(path: Path):  # draws and returns the figure (saved by Report.save)
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.2))
        hs = list(per_width)
        for key, label in (("merge/barrier", "naive"), ("merge/barrier_matched", "weight matching")):
            ax.plot(hs, [mean([r[key] for r in per_width[h]]) for h in hs], "o-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width H")
        ax.set_ylabel("test-loss barrier")
        ax.set_title("digits: loss barrier between seeds")
        ax.legend()
        return fig

    return report, figure


if __name__ == "__main__":
    main("rebasin", __doc__, run)
