"""(d) Ternary b1.58 vs full precision at growing hidden width; mean vs median scale rule
(Ma et al., 2024, "The Era of 1-bit LLMs", arXiv 2402.17764; Nielsen & Schneider-Kamp, 2024,
"BitNet b1.58 Reloaded", arXiv 2407.09527).

Per width H: an MLP 64→H→H→10 trained from scratch on digits (``DigitsSeedsTask(seeds=(s,),
hidden=H)``, AdamW lr 1e-3, batch 64), in float32 or quantization-aware with ternary weights on
every linear layer (``quant.Quantization(bits=1.58, scale_rule="mean"|"median")``; straight-through
estimator; the accuracy is that of the deployed ternary model). Same lr for all arms (not tuned).

    python -m studies.ternary [--small] [--seeds N]
"""
from __future__ import annotations

from pathlib import Path

import automl
from automl import adapters, quant
from automl.tasks import DigitsSeedsTask
from studies._common import Report, main, mean, mean_sd

CLAIM = ("BitNet b1.58 Reloaded (arXiv 2407.09527): small networks trained with ternary (1.58-bit) "
         "weights approach full precision but need more width (roughly twice the hidden size) to match "
         "it, and the median of |W| is proposed as the scale for small models instead of b1.58's mean "
         "(exact numbers unverified here). reference.md's digits check: 1–2 points below fp32 at H=32, "
         "≤ 0.6 at H ≥ 128; median vs mean: no consistent difference.")
COLUMNS = ["width", "fp32", "b1.58 mean", "b1.58 median", "gap mean (pts)", "gap median (pts)"]


def run(small: bool = False, seeds: int = 5):
    steps = 60 if small else 300
    widths = (16, 64) if small else (16, 32, 64, 128, 256)
    arms = {"fp32": quant.Quantization(bits=32),
            "b1.58 mean": quant.Quantization(bits=1.58, scale_rule="mean"),
            "b1.58 median": quant.Quantization(bits=1.58, scale_rule="median")}
    report = Report("ternary", CLAIM, f"digits from scratch, {steps} steps × batch 64, lr 1e-3, widths {widths}, "
                    f"{seeds} seeds (test accuracy, mean ± sd; gap = fp32 − ternary in points)", COLUMNS)
    acc: dict[tuple[int, str], list[float]] = {}
    for h in widths:
        for name, q in arms.items():
            acc[h, name] = [automl.evaluate(automl.Recipe(adapter=adapters.FullFineTune(), quant=q, lr=1e-3,
                                                          steps=steps, seed=s),
                                            task=DigitsSeedsTask(seeds=(10 + s,), name=f"digits-scratch-h{h}",
                                                                 hidden=h)).metrics["accuracy"]
                            for s in range(seeds)]
        gap = {n: 100 * (mean(acc[h, "fp32"]) - mean(acc[h, n])) for n in ("b1.58 mean", "b1.58 median")}
        report.rows.append({"width": h, **{n: mean_sd(acc[h, n]) for n in arms},
                            "gap mean (pts)": f"{gap['b1.58 mean']:.1f}", "gap median (pts)": f"{gap['b1.58 median']:.1f}"})
    gaps = {h: 100 * (mean(acc[h, "fp32"]) - mean(acc[h, "b1.58 mean"])) for h in widths}
    report.check(f"the ternary gap shrinks with width (H={widths[0]}: {gaps[widths[0]]:.1f} pts → "
                 f"H={widths[-1]}: {gaps[widths[-1]]:.1f} pts)", gaps[widths[-1]] < gaps[widths[0]])
    for h in widths:
        if 2 * h in widths:
            t2, f1 = mean(acc[2 * h, "b1.58 mean"]), mean(acc[h, "fp32"])
            report.check(f"ternary at 2×width matches fp32 (H={2 * h} ternary {t2:.3f} ≥ H={h} fp32 {f1:.3f} − 0.005)",
                         t2 >= f1 - 0.005)
    diff = mean([mean(acc[h, "b1.58 median"]) - mean(acc[h, "b1.58 mean"]) for h in widths])
    wins = sum(mean(acc[h, "b1.58 median"]) > mean(acc[h, "b1.58 mean"]) for h in widths)
    report.check(f"median scale is not worse than mean on average over widths (median − mean = {100 * diff:+.2f} pts; "
                 f"median ahead at {wins}/{len(widths)} widths)", diff >= 0)

    def figure(path: Path):  # draws and returns the figure (saved by Report.save)
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name in arms:
            ax.plot(widths, [mean(acc[h, name]) for h in widths], "o-", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width H")
        ax.set_ylabel(f"test accuracy (mean of {seeds} seeds)")
        ax.set_title("digits from scratch: ternary vs fp32")
        ax.legend()
        return fig

    return report, figure


if __name__ == "__main__":
    main("ternary", __doc__, run)
