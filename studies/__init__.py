"""Replications of the source papers' findings, one command each: ``python -m studies.NAME``.

Each module prints the paper's claim, our measurement (mean ± sd over seeds) and whether the
direction agrees, and saves ``table.md``, ``table.csv`` and ``figure.png`` under
``studies/results/NAME/``. ``--small`` runs the CI setting (fewer seeds and steps, seconds).
"""
