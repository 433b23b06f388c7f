"""A study report: the leaderboard and plots as one HTML page with PNG figures.

Optuna's matplotlib visualizations draw the generic views (optimization history, Pareto front,
parameter importances); the spectral view (accuracy against intruder dimensions, per adapter)
is ours.
"""
from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from automl.errors import AutomlError, StudyError

if TYPE_CHECKING:
    from automl.study import Study


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise AutomlError("reports need matplotlib: pip install 'automl[report]'.") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_report(study: "Study", out: str | Path) -> Path:
    """Write ``index.html`` and its figures into ``out``; return the page's path."""
    plt = _pyplot()
    import optuna.visualization.matplotlib as ovm

    board = study.leaderboard()
    if board.empty:
        raise StudyError(f"study {study.name!r} has no completed trial to report on.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []

    def save(name: str, title: str) -> None:
        plt.gcf().set_size_inches(7, 4.5)
        plt.tight_layout()
        plt.savefig(out / name, dpi=110)
        plt.close("all")
        figures.append((name, title))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        if study.objective.multi:
            if len(study.objective.names) in (2, 3):
                ovm.plot_pareto_front(study.optuna, target_names=study.objective.names)
                save("pareto.png", "Pareto front")
        else:
            ovm.plot_optimization_history(study.optuna)
            save("history.png", "Optimization history")
            if len(board) >= 4 and len(study.optuna.best_trial.params) >= 2:
                ovm.plot_param_importances(study.optuna)
                save("importances.png", "Parameter importances (fANOVA)")

    for metric, label in (("intruders", "intruder dimensions (sum over hidden layers)"),
                          ("forgetting", "forgetting (drop in pretraining-task accuracy)")):
        fig, ax = plt.subplots()
        for adapter, rows in board.groupby("adapter"):
            ax.scatter(rows[metric], rows["accuracy"], label=adapter, alpha=0.75)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (deployed model)")
        ax.legend()
        save(f"accuracy_vs_{metric}.png", f"Accuracy vs {metric}")

    images = "\n".join(f'<figure><img src="{n}" alt="{html.escape(t)}"><figcaption>{html.escape(t)}'
                       f'</figcaption></figure>' for n, t in figures)
    table = board.to_html(float_format=lambda v: f"{v:.4g}", na_rep="", border=0)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>automl study {html.escape(study.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}} figure{{display:inline-block;margin:1em}}</style>
</head><body>
<h1>Study {html.escape(study.name)}</h1>
<p>Task <b>{html.escape(study.task_name)}</b>; objective <code>{html.escape(str(study.objective.names))}</code>;
{len(study.trials())} trials ({len(board)} completed); storage <code>{html.escape(study.storage_url)}</code>.</p>
{images}
<h2>Leaderboard</h2>
{table}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
