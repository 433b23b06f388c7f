"""(e) SORSA and SVFit against LoRA at (near) equal trainable parameters, and WeLore's per-layer
ranks against a uniform rank: accuracy per trainable parameter, on digits.

All adapters target every linear layer (fc1 64→256, fc2 256→256, head 256→10), so a rank is at
most 10 (the head). LoRA r trains r·(in+out) per layer (1098·r here), SORSA r trains r·(in+out+1)
(≈ LoRA's count), SVFit r trains only the r top singular values per layer (3·r): it cannot reach
LoRA's count, so it is compared per parameter. WeLore: ``LoRA(rank=8, ranks=WeLoreRanks(keep=0.9))``
gives each layer a rank ∝ the singular values it needs to keep 90 % of its spectrum; the uniform
LoRA rank compared with it is the one whose parameter count is nearest. Learning rates: LoRA and
SORSA 3e-3, SVFit 3e-2 (the README: SVFit wants 1e-2–1e-1); not tuned.

    python -m studies.svd_adapters [--small] [--seeds N]
"""
from __future__ import annotations

from pathlib import Path

import automl
from automl import adapters
from studies._common import Report, main, mean, mean_sd

CLAIM = ("SORSA (Cao, arXiv 2409.00055): orthonormal-regularised singular-vector adaptation beats LoRA "
         "and PiSSA at the same rank (abstract: Llama 2 7B on GSM-8K 56.03 % vs LoRA 42.30 %; not "
         "rechecked here). SVFit (arXiv 2409.05926): training only the top singular values matches or beats "
         "LoRA with far fewer trainable parameters (abstract: ~16× fewer; unverified here). WeLore "
         "(arXiv 2407.11239): layers differ in how low-rank they are, so non-uniform ranks should spend "
         "parameters better than a uniform rank (our reading, applied to adapter ranks).")
COLUMNS = ["method", "lr", "trainable params", "accuracy", "acc per 1k params", "forgetting", "intruders"]


def run(small: bool = False, seeds: int = 5):
    steps = 60 if small else 300
    arms = [("LoRA r=1", adapters.LoRA(rank=1), 3e-3), ("SORSA r=1", adapters.SORSA(rank=1), 3e-3),
            ("LoRA r=4", adapters.LoRA(rank=4), 3e-3), ("SORSA r=4", adapters.SORSA(rank=4), 3e-3),
            ("SVFit r=10", adapters.SVFit(rank=10), 3e-2),
            ("LoRA WeLore(keep=0.9) max r=8", adapters.LoRA(rank=8, ranks=adapters.WeLoreRanks(keep=0.9)), 3e-3)]
    report = Report("svd_adapters", CLAIM, f"digits (mirror, labels +3), all linear layers, {steps} steps × batch 64, "
                    f"{seeds} seeds (mean ± sd)", COLUMNS)
    results: dict[str, list[dict]] = {}

    def add(label, adapter, lr):
        runs = [automl.evaluate(automl.Recipe(adapter=adapter, lr=lr, steps=steps, seed=s), task="digits").metrics
                for s in range(seeds)]
        results[label] = runs
        p = runs[0]["trainable_params"]
        report.rows.append({"method": label, "lr": f"{lr:g}", "trainable params": int(p),
                            "accuracy": mean_sd([r["accuracy"] for r in runs]),
                            "acc per 1k params": f"{1000 * mean([r['accuracy'] for r in runs]) / p:.3f}",
                            "forgetting": mean_sd([r["forgetting"] for r in runs]),
                            "intruders": mean_sd([r["intruders"] for r in runs], 2)})

    for arm in arms:
        add(*arm)
    per_rank = results["LoRA r=1"][0]["trainable_params"]
    welore_p = results["LoRA WeLore(keep=0.9) max r=8"][0]["trainable_params"]
    uniform = min((1, 2, 4, 8), key=lambda r: abs(r * per_rank - welore_p))
    label_u = f"LoRA uniform r={uniform}"
    if f"LoRA r={uniform}" in results:
        results[label_u] = results[f"LoRA r={uniform}"]
        report.notes.append(f"uniform rank nearest WeLore's {int(welore_p)} parameters: r={uniform} (row 'LoRA r={uniform}')")
    else:
        add(label_u, adapters.LoRA(rank=uniform), 3e-3)
    acc = {k: mean([r["accuracy"] for r in v]) for k, v in results.items()}
    par = {k: v[0]["trainable_params"] for k, v in results.items()}
    for r in (1, 4):
        report.check(f"SORSA r={r} beats LoRA r={r} at ~equal parameters ({acc[f'SORSA r={r}']:.3f} vs "
                     f"{acc[f'LoRA r={r}']:.3f}; {int(par[f'SORSA r={r}'])} vs {int(par[f'LoRA r={r}'])} params)",
                     acc[f"SORSA r={r}"] > acc[f"LoRA r={r}"])
    report.check(f"SVFit ({int(par['SVFit r=10'])} params) matches LoRA r=1 ({int(par['LoRA r=1'])} params) within "
                 f"1 point ({acc['SVFit r=10']:.3f} vs {acc['LoRA r=1']:.3f})", acc["SVFit r=10"] >= acc["LoRA r=1"] - 0.01)
    w = "LoRA WeLore(keep=0.9) max r=8"
    report.check(f"WeLore ranks beat the uniform rank r={uniform} per trainable parameter "
                 f"({1000 * acc[w] / par[w]:.3f} vs {1000 * acc[label_u] / par[label_u]:.3f} accuracy per 1k params; "
                 f"accuracy {acc[w]:.3f} vs {acc[label_u]:.3f})",
                 acc[w] / par[w] > acc[label_u] / par[label_u])

    def figure(path: Path):  # draws and returns the figure (saved by Report.save)
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for k in results:
            ax.scatter(par[k], acc[k], label=k)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(f"accuracy (mean of {seeds} seeds)")
        ax.set_title("digits: accuracy vs trainable parameters")
        ax.legend(fontsize=7)
        return fig

    return report, figure


if __name__ == "__main__":
    main("svd_adapters", __doc__, run)
