"""The README's digits space (``search_spaces/digits.py``) with its learning rate on a grid.

``digits.py`` draws ``lr`` from a continuous range, so it holds infinitely many recipes; here
``lr`` takes 7 log-spaced values from 1e-4 to 1e-2, which makes 13 adapters × 7 = 91 recipes:
the tabular benchmark's small space (``benchmarks/data/digits_grid.json``).
"""
import pyglove as pg

from search_spaces.digits import OBJECTIVE, SPACE as CONTINUOUS, TASK

LR_GRID = [1e-4, 2.15e-4, 4.64e-4, 1e-3, 2.15e-3, 4.64e-3, 1e-2]
SPACE = CONTINUOUS.clone(override={"lr": pg.oneof(LR_GRID)})
__all__ = ["OBJECTIVE", "SPACE", "TASK"]
