"""Quantization: packed file size per bit-width, and deployed accuracy on the digits task.

1. File size: the digits MLP (64→256→256→10, 85k parameters) and a 1024-wide MLP (1.1M), each
   deployed at every bit-width and written by ``quant.save_packed``: fp32 size / packed size,
   bits per parameter (weights + bf16 scales + fp32 biases), and how far the file (whose JSON
   header is a few hundred bytes) is from ``bits_per_parameter × params / 8``.
2. Accuracy: ``automl.evaluate`` of full fine-tuning with quantization-aware training (STE) and
   of LoRA r=8 on a quantized frozen base (QLoRA regime), per bit-width at the task's fixed width
   (256), mean over seeds. The evaluated model is the deployed one (merged, re-quantized).
3. Quantization-aware training from scratch (the "BitNet b1.58 Reloaded" setting, small
   models): the MLP trained from a random init on the original digits task at widths 16, 32,
   256, per bit-width, mean over seeds (reference.md: ternary ≈ 1–2 points below fp32 at width
   32, ≤ 0.6 at width ≥ 128).
4. A study sweeping ``Quantization(bits=pg.oneof(...))`` (PyGlove ``Sweeping`` behind the Optuna
   study): its leaderboard reports accuracy and bits per parameter for every trial.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AUTOML_STUDIES", tempfile.mkdtemp(prefix="automl-bench-"))

import pyglove as pg  # noqa: E402
import torch  # noqa: E402
from functools import cached_property  # noqa: E402
from torch import nn  # noqa: E402

import automl  # noqa: E402
from automl import adapters, quant  # noqa: E402
from automl.tasks.digits import DigitsSeedsTask, digits_mlp  # noqa: E402

BITS = (32, 16, 8, 4, 2, 1.58)
SEEDS = range(3)
torch.set_num_threads(1)


def mlp(width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(64, width), act1=nn.ReLU(), fc2=nn.Linear(width, width),
                                     act2=nn.ReLU(), head=nn.Linear(width, 10)))


def file_sizes(width: int, out: Path) -> None:
    fp32 = None
    print(f"\nMLP 64→{width}→{width}→10: packed safetensors files")
    print(f"{'quant':<8} {'bytes':>9} {'fp32/packed':>11} {'bits/param':>10} {'file vs bits':>12}")
    for bits in BITS:
        q = quant.Quantization(bits=bits)
        model = q.deploy(mlp(width))
        path = quant.save_packed(model, q, out / f"w{width}-{q.label}.safetensors")
        size = path.stat().st_size
        fp32 = fp32 or size
        params = sum(t.numel() for t in model.state_dict().values())
        bpp = q.bits_per_parameter(model)
        print(f"{q.label:<8} {size:>9} {fp32 / size:>11.2f} {bpp:>10.3f} {size / (bpp * params / 8) - 1:>+12.2%}")
        restored = quant.load_packed(path)
        assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items())


def accuracy() -> None:
    print(f"\ndigits (width 256), deployed accuracy, mean of {len(SEEDS)} seeds, 300 steps")
    print(f"{'quant':<8} {'regime':<22} {'accuracy':>8} {'min':>6} {'forgetting':>10} {'bits':>6}")
    for name, adapter, lr in (("full FT + QAT (STE)", adapters.FullFineTune(), 1e-3),
                              ("LoRA r=8, quant. base", adapters.LoRA(rank=8), 3e-3)):
        for bits in BITS:
            q = quant.Quantization(bits=bits)
            runs = [automl.evaluate(automl.Recipe(adapter=adapter, quant=q, lr=lr, seed=s), "digits").metrics
                    for s in SEEDS]
            acc = [r["accuracy"] for r in runs]
            print(f"{q.label:<8} {name:<22} {statistics.mean(acc):>8.3f} {min(acc):>6.3f} "
                  f"{statistics.mean(r['forgetting'] for r in runs):>10.3f} {runs[0]['bits']:>6.2f}")


class ScratchDigits(DigitsSeedsTask):
    """The digits MLP of a given width trained from the random init ``seed`` on the original task;
    its "pretrained" model (reference for forgetting and intruders) is the init of seed 0."""

    def __init__(self, width: int, seed: int):
        super().__init__(seeds=(seed,), name=f"digits-scratch-w{width}")
        self.width = width

    def build_model(self) -> nn.Module:
        return digits_mlp(self.width)

    @cached_property
    def _init(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build_model().eval()

    def pretrained_model(self) -> nn.Module:
        return self._init


def from_scratch() -> None:
    bits_list = (32, 8, 4, 2, 1.58)
    print(f"\nQAT from scratch on digits, accuracy (mean of {len(SEEDS)} seeds, 600 steps, lr 3e-3)")
    print(f"{'width':<6}" + "".join(f"{quant.Quantization(bits=b).label:>8}" for b in bits_list))
    for width in (16, 32, 256):
        row = []
        for bits in bits_list:
            recipe = lambda s: automl.Recipe(adapter=adapters.FullFineTune(), quant=quant.Quantization(bits=bits),
                                             lr=3e-3, steps=600, seed=s)
            row.append(statistics.mean(automl.evaluate(recipe(s), ScratchDigits(width, s + 1)).metrics["accuracy"]
                                       for s in SEEDS))
        print(f"{width:<6}" + "".join(f"{a:>8.3f}" for a in row))


def search() -> None:
    space = automl.Recipe(adapter=adapters.FullFineTune(), quant=quant.Quantization(bits=pg.oneof(list(BITS))))
    study = automl.search(space, task="digits", algorithm=pg.geno.Sweeping(), n_trials=len(BITS),
                          study_name="quant-bits", progress=False)
    board = study.leaderboard()
    # the leaderboard's "bits" column holds the searched value quant.bits (same short name as the
    # metric); the metric, bits per parameter as deployed, is the trial's user attribute
    per_param = {t.number: t.user_attrs["bits"] for t in study.optuna.trials}
    board["bits/param"] = board["trial"].map(per_param)
    print("\nstudy sweeping bits (full FT + QAT, seed 0), leaderboard:")
    print(board[["quant", "accuracy", "forgetting", "bits/param", "score"]].to_string())


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for width in (256, 1024):
            file_sizes(width, Path(tmp))
    accuracy()
    from_scratch()
    search()
