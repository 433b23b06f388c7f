"""A study report: one self-contained HTML page (``index.html``, PNG figures beside it).

Order: the study and its objective's formula, the leaderboard, then the figures in a grid —
optimization history, the Pareto front (2-D projections for three or more objectives), accuracy
against intruder dimensions and forgetting coloured by adapter, per-layer intruder dimensions of
the best trials, pretrained vs tuned singular values of the best trial, parameter importances.
Optuna's matplotlib visualizations draw the generic views; the spectral ones are ours.

The spectra use the best trial's *stored* weights (kept for the best trials, see
:mod:`automl.artifacts`), rebuilt by :func:`automl.tuned.subtask_model`; nothing is trained. When
they are not stored (pruned, or written to another machine's store) the page says so instead.
"""
from __future__ import annotations

import html
import itertools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from automl.errors import AutomlError, StudyError

if TYPE_CHECKING:
    from automl.study import Study

HEATMAP_TRIALS = 10      # best trials shown in the per-layer heatmap
SPECTRA_LAYERS = 4       # layers shown in the spectra figure (the widest adapted ones)
FIGURE_SIZE = (6.4, 4.4)  # inches; saved at DPI → 704×484 px
DPI = 110


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise AutomlError("reports need matplotlib: pip install 'automl[report]'.") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


@dataclass
class Page:
    """The figures and notes gathered for one report, saved under ``out``."""

    out: Path
    plt: object
    figures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def save(self, figure, name: str, title: str, size: tuple[float, float] = FIGURE_SIZE) -> None:
        figure.set_size_inches(*size)
        figure.tight_layout()
        figure.savefig(self.out / name, dpi=DPI)
        self.plt.close(figure)
        self.figures.append((name, title))

    def note(self, text: str) -> None:
        self.notes.append(text)


class Report:
    """The report of one study (``write`` draws and saves every part)."""

    def __init__(self, study: "Study"):
        self.study = study
        self.board = study.leaderboard()
        if self.board.empty:
            raise StudyError(f"study {study.name!r} has no completed trial to report on.")
        self.objective = study.objective
        self.best = [int(n) for n in self.board["trial"]]

    # -- parts --------------------------------------------------------------------------------
    def parts(self) -> list[Callable[[Page], None]]:
        return [self.history, self.pareto, self.accuracy_vs_intruders, self.accuracy_vs_forgetting,
                self.layer_intruders, self.spectra, self.importances]

    def _targets(self) -> list[tuple[str, Callable | None]]:
        """(name, Optuna ``target``) per objective; ``None`` for a single objective's value."""
        if not self.objective.multi:
            return [(self.objective.names[0], None)]
        return [(name, lambda t, i=i: t.values[i]) for i, name in enumerate(self.objective.names)]

    def _file(self, kind: str, objective: str) -> str:
        """``history.png`` for a single objective, ``history_<objective>.png`` for several."""
        return f"{kind}_{_slug(objective)}.png" if self.objective.multi else f"{kind}.png"

    def history(self, page: Page) -> None:
        import optuna.visualization.matplotlib as ovm
        for name, target in self._targets():
            ax = ovm.plot_optimization_history(self.study.optuna, target=target, target_name=name)
            ax.set_title(f"Optimization history: {name}")
            page.save(ax.figure, self._file("history", name), f"Optimization history of {name}")

    def pareto(self, page: Page) -> None:
        if not self.objective.multi:
            return
        import optuna.visualization.matplotlib as ovm
        names = self.objective.names
        if len(names) == 2:
            ax = ovm.plot_pareto_front(self.study.optuna, target_names=names)
            page.save(ax.figure, "pareto.png", "Pareto front")
            return
        for i, j in itertools.combinations(range(len(names)), 2):
            ax = ovm.plot_pareto_front(self.study.optuna, target_names=[names[i], names[j]],
                                       targets=lambda t, i=i, j=j: (t.values[i], t.values[j]))
            ax.set_title(f"Pareto front ({len(names)} objectives) projected on {names[i]}, {names[j]}")
            page.save(ax.figure, f"pareto_{_slug(names[i])}_{_slug(names[j])}.png",
                      f"Pareto front projected on {names[i]} × {names[j]}")

    def _accuracy_vs(self, page: Page, metric: str, label: str) -> None:
        fig, ax = page.plt.subplots()
        for adapter, rows in self.board.groupby("adapter", dropna=False):
            ax.scatter(rows[metric], rows["accuracy"], label=str(adapter), alpha=0.75)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (deployed model)")
        ax.set_title(f"Accuracy vs {metric}, by adapter")
        ax.legend(title="adapter", fontsize=8)
        page.save(fig, f"accuracy_vs_{metric}.png", f"Accuracy vs {metric}, coloured by adapter")

    def accuracy_vs_intruders(self, page: Page) -> None:
        self._accuracy_vs(page, "intruders", "intruder dimensions (sum over hidden layers)")

    def accuracy_vs_forgetting(self, page: Page) -> None:
        self._accuracy_vs(page, "forgetting", "forgetting (drop of the pretrained skill)")

    def layer_intruders(self, page: Page) -> None:
        """Heatmap: the best trials (rows) × adapted layers (columns), intruder dimensions per layer."""
        top = self.best[:HEATMAP_TRIALS]
        per_trial = {n: {k.split("/", 1)[1]: v for k, v in self.study.metrics(n).items()
                         if k.startswith("intruders/")} for n in top}
        table = pd.DataFrame.from_dict(per_trial, orient="index")
        if table.empty:
            page.note("No per-layer intruder counts (intruders/&lt;layer&gt;) are stored for the best trials.")
            return
        table = table.reindex(columns=sorted(table.columns))
        fig, ax = page.plt.subplots()
        image = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap="magma_r")
        ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right", fontsize=8)
        ax.grid(False)
        ax.set_yticks(range(len(table)), [f"#{r} trial {n}" for r, n in enumerate(table.index, 1)], fontsize=8)
        values = table.to_numpy(dtype=float)
        high = max(1.0, float(pd.Series(values.ravel()).max()))
        for (y, x), value in pd.DataFrame(values).stack().items():
            ax.text(x, y, f"{value:g}", ha="center", va="center", fontsize=8,
                    color="white" if value > high / 2 else "black")
        fig.colorbar(image, ax=ax, label="intruder dimensions")
        ax.set_title(f"Intruder dimensions per layer, best {len(table)} trials")
        page.save(fig, "layer_intruders.png", "Intruder dimensions per layer of the best trials",
                  size=(FIGURE_SIZE[0], max(FIGURE_SIZE[1], 1.2 + 0.32 * len(table))))

    def spectra(self, page: Page) -> None:
        """Singular values of the pretrained and the tuned weights of the best trial's widest
        adapted layers, from its stored weights (never re-trained here)."""
        import torch

        from automl.artifacts import load_trained_states
        from automl.tuned import subtask_model
        best = self.best[0]
        try:
            task = self.study.task
            recipe = self.study.recipe(best)
            subtasks = task.subtasks
            states = load_trained_states(self.study.artifact_store, self.study._trial(best),
                                         [s.name for s in subtasks], self.study.name)
            if states is None:
                page.note(f"Singular value spectra: the best trial ({best}) has no stored weights (they were "
                          f"pruned, or kept in another artifact store), so none are drawn; nothing is re-trained "
                          f"for a report. <code>automl reproduce {html.escape(self.study.name)} {best}</code> "
                          f"re-runs it.")
                return
            tuned = subtask_model(recipe, task, 0, states[0])
            pretrained = task.pretrained_model()
        except AutomlError as e:
            page.note(f"Singular value spectra not drawn: {html.escape(str(e))}")
            return
        layers = recipe.adapter.plan(pretrained, within=task.adaptable_layers(pretrained))
        before = {n: m.weight for n, m in pretrained.named_modules() if n in layers}
        after = {n: m.weight for n, m in tuned.named_modules() if n in layers}
        shown = sorted(before, key=lambda n: -min(before[n].shape))[:SPECTRA_LAYERS]
        if not shown:
            page.note(f"Singular value spectra: trial {best} adapts no linear layer.")
            return
        cols = min(2, len(shown))
        rows = math.ceil(len(shown) / cols)
        fig, axes = page.plt.subplots(rows, cols, squeeze=False)
        metrics = self.study.metrics(best)
        for ax, name in zip(axes.flat, shown):
            with torch.no_grad():
                s0 = torch.linalg.svdvals(before[name].detach().float()).numpy()
                s1 = torch.linalg.svdvals(after[name].detach().float()).numpy()
            ax.semilogy(s0, "--", label="pretrained", color="tab:gray")
            ax.semilogy(s1, label="tuned", color="tab:red", alpha=0.8)
            intruders = metrics.get(f"intruders/{name}")
            ax.set_title(f"{name}" + (f" ({intruders:g} intruders)" if intruders is not None else ""), fontsize=9)
            ax.set_xlabel("index", fontsize=8)
            ax.set_ylabel("singular value", fontsize=8)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(shown):]:
            ax.axis("off")
        where = f" (subtask {subtasks[0].name!r}, before merging the {len(subtasks)} subtask models)" \
            if len(subtasks) > 1 else ""
        fig.suptitle(f"Best trial {best}: {recipe.adapter.label}{where}", fontsize=10)
        page.save(fig, "spectra.png", f"Singular values, pretrained vs tuned, of the best trial ({best}) "
                                      f"from its stored weights{where}", size=(FIGURE_SIZE[0], 2.4 * rows + 0.8))

    def importances(self, page: Page) -> None:
        import optuna.visualization.matplotlib as ovm
        n_params = len({p for t in self.study.trials() for p in t.params})
        if len(self.board) < 3 or n_params < 2:
            page.note(f"Parameter importances need at least 3 completed trials and 2 searched parameters "
                      f"(this study: {len(self.board)} and {n_params}).")
            return
        for name, target in self._targets():
            try:
                ax = ovm.plot_param_importances(self.study.optuna, target=target, target_name=name)
            except (ValueError, RuntimeError) as e:  # e.g. no parameter shared by all completed trials
                page.note(f"Parameter importances for {html.escape(name)} not drawn: {html.escape(str(e))}")
                continue
            ax.set_title(f"Parameter importances for {name} (fANOVA)", loc="left")
            page.save(ax.figure, self._file("importances", name), f"Parameter importances for {name} (fANOVA)")

    # -- the page -----------------------------------------------------------------------------
    def write(self, out: str | Path) -> Path:
        """Write ``index.html`` and its figures into ``out``; return the page's path."""
        page = Page(Path(out), _pyplot())
        page.out.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            for part in self.parts():
                part(page)
        path = page.out / "index.html"
        path.write_text(self.html(page))
        return path

    def html(self, page: Page) -> str:
        study = self.study
        table = self.board.to_html(float_format=lambda v: f"{v:.4g}", na_rep="", border=0, classes="board")
        figures = "\n".join(
            f'<figure><img src="{html.escape(name)}" alt="{html.escape(title)}">'
            f'<figcaption>{html.escape(title)}</figcaption></figure>' for name, title in page.figures)
        notes = "".join(f"<li>{n}</li>" for n in page.notes)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>automl study {html.escape(study.name)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}}
h1{{margin-bottom:.2em}} .meta{{color:#555;margin-top:0}}
.formula{{font-size:1.05em;background:#f4f4f8;padding:.5em .8em;border-radius:4px;display:inline-block}}
.scroll{{max-height:26em;overflow:auto;border:1px solid #ddd}}
table.board{{border-collapse:collapse;font-size:12px;white-space:nowrap}}
table.board td,table.board th{{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}}
table.board thead th{{position:sticky;top:0;background:#fafafa}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:1.2em}}
figure{{margin:0;border:1px solid #eee;padding:.5em}} figure img{{width:100%;height:auto}}
figcaption{{font-size:13px;color:#444}}
</style></head><body>
<h1>Study {html.escape(study.name)}</h1>
<p class="meta">Task <b>{html.escape(study.task_name)}</b>; {len(study.trials())} trials
({len(self.board)} completed and distinct); storage <code>{html.escape(study.storage_url)}</code>.</p>
<p>Objective: <span class="formula">{html.escape(self.objective.formula)}</span></p>
<h2>Leaderboard</h2>
<div class="scroll">{table}</div>
<h2>Figures</h2>
<div class="grid">
{figures}
</div>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
</body></html>
"""


def write_report(study: "Study", out: str | Path) -> Path:
    """Write ``index.html`` and its figures into ``out``; return the page's path."""
    return Report(study).write(out)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
