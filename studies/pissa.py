"""(b) PiSSA vs LoRA: training loss over the first steps, same rank and learning-rate grid
(Meng et al., 2024, "PiSSA", arXiv 2404.02948).

Both adapt the hidden layers (fc1, fc2) at rank 4 with α = 16 (the same scale); PiSSA starts
from the top-4 singular triplets (its initial model equals the pretrained one). The training loss
of every step is recorded through the task interface (a digits task whose ``loss`` keeps the
values the trainer asks for).

    python -m studies.pissa [--small] [--seeds N]
"""
from __future__ import annotations

from pathlib import Path

import automl
from automl import adapters
from automl.tasks import DigitsTask
from studies._common import Report, main, mean, mean_sd

CLAIM = ("Meng et al. (PiSSA, arXiv 2404.02948): initialising the adapter with the principal "
         "singular components makes training converge faster than LoRA at the same rank (lower "
         "training loss early on, in their Fig. 1/3 loss curves on LLaMA-2-7B); reference.md's "
         "digits check: PiSSA's mean loss over the first 100 steps was lower at every lr in 10/10 seeds.")
COLUMNS = ["lr", "LoRA mean loss", "PiSSA mean loss", "PiSSA lower (seeds)", "LoRA final loss", "PiSSA final loss"]


class LossRecordingDigits(DigitsTask):
    """The digits task, recording each training-step loss (``losses``)."""

    def __init__(self) -> None:
        super().__init__(("mirror",), name="digits")
        self.losses: list[float] = []

    def loss(self, model, batch):
        value = super().loss(model, batch)
        self.losses.append(float(value.detach()))
        return value


def curve(adapter, lr: float, steps: int, seed: int) -> list[float]:
    task = LossRecordingDigits()
    automl.evaluate(automl.Recipe(adapter=adapter, lr=lr, steps=steps, seed=seed), task=task)
    return task.losses


def run(small: bool = False, seeds: int = 5):
    steps = 20 if small else 100
    lrs = (1e-3, 1e-2) if small else (1e-4, 1e-3, 1e-2)
    arms = {"LoRA": adapters.LoRA(rank=4, targets=("fc1", "fc2")),
            "PiSSA": adapters.PiSSA(rank=4, targets=("fc1", "fc2"))}
    report = Report("pissa", CLAIM, f"digits, rank 4 on fc1/fc2, α=16, first {steps} steps × batch 64, "
                    f"{seeds} seeds per lr (mean ± sd of the mean training loss over those steps)", COLUMNS)
    curves: dict[tuple[str, float], list[list[float]]] = {}
    for lr in lrs:
        for name, adapter in arms.items():
            curves[name, lr] = [curve(adapter, lr, steps, s) for s in range(seeds)]
        lora = [mean(c) for c in curves["LoRA", lr]]
        pissa = [mean(c) for c in curves["PiSSA", lr]]
        wins = sum(p < l for p, l in zip(pissa, lora))
        report.rows.append({"lr": f"{lr:g}", "LoRA mean loss": mean_sd(lora), "PiSSA mean loss": mean_sd(pissa),
                            "PiSSA lower (seeds)": f"{wins}/{seeds}",
                            "LoRA final loss": mean_sd([c[-1] for c in curves["LoRA", lr]]),
                            "PiSSA final loss": mean_sd([c[-1] for c in curves["PiSSA", lr]])})
        report.check(f"lr {lr:g}: PiSSA's mean early loss is lower than LoRA's ({mean(pissa):.3f} vs "
                     f"{mean(lora):.3f}; {wins}/{seeds} seeds)", mean(pissa) < mean(lora))

    def figure(path: Path):  # draws and returns the figure (saved by Report.save)
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(lrs), figsize=(4 * len(lrs), 3.2), sharey=True)
        for ax, lr in zip(axes, lrs):
            for name in arms:
                runs = curves[name, lr]
                ax.plot(range(1, steps + 1), [mean([r[i] for r in runs]) for i in range(steps)], label=name)
            ax.set_title(f"lr {lr:g}")
            ax.set_xlabel("step")
        axes[0].set_ylabel(f"training loss (mean of {seeds} seeds)")
        axes[0].legend()
        return fig

    return report, figure


if __name__ == "__main__":
    main("pissa", __doc__, run)
