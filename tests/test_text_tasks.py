"""Text tasks on real Hugging Face architectures (tiny random BERT and Llama with the real module
names, a word-level tokenizer built here; no download): the batch-based task interface, every
recipe dimension on them, peft parity on their layers, and exports that peft loads onto the
``transformers`` model."""
from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="text tasks need the extra: pip install 'automl[text]'")
peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import automl  # noqa: E402
from automl import adapters, merge, quant  # noqa: E402
from automl.export import TRAINED_MODULES, export_adapter  # noqa: E402
from automl.tasks import HFCausalLM, HFClassification, RetrievalSkill  # noqa: E402
from automl.tasks.text import TextData, tokenize_classification  # noqa: E402
from tests.test_peft_parity import copy_into_peft  # noqa: E402
from tests.test_adapters import perturb  # noqa: E402

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "a", "movie", "food", "day", "was", "is", "very",
         "what", "who", "why", "answer", "question", "yes", "no", "cat", "dog", "red", "blue"]
POSITIVE, NEGATIVE = WORDS[:3], WORDS[3:6]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                eos_token="</s>")


def sentiment(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        filler = rng.sample(WORDS[6:13], 3)
        texts.append(" ".join([*filler, rng.choice(POSITIVE if label else NEGATIVE)]))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    path = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(str(path))
    word_tokenizer().save_pretrained(str(path))
    return path


def classification(bert_dir, **kwargs) -> HFClassification:
    skill = RetrievalSkill(tuple(f"what is the {w}" for w in WORDS[:10]), tuple(f"{w} {w} very" for w in WORDS[:10]),
                           candidates=4, max_length=8)
    return HFClassification(bert_dir, train=sentiment(256, 0), test=sentiment(64, 1), name="tiny-sentiment",
                            max_length=8, skill=skill, **kwargs)


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=4)
    return transformers.LlamaForCausalLM(config)


def qa_split():
    rng = random.Random(0)
    prompts = [f"what {rng.choice(WORDS[21:])}" for _ in range(64)]
    answers = [p.split()[1] + " is " + ("red" if p.split()[1] in ("cat", "dog") else "blue") for p in prompts]
    return (prompts[:48], answers[:48]), (prompts[48:], answers[48:])


def causal(llama, subtasks=None) -> HFCausalLM:
    split = (None, None) if subtasks else qa_split()
    return HFCausalLM(llama, *split, subtasks=subtasks, tokenizer=word_tokenizer(),
                      pretrain_texts=["the movie was good"] * 4, template="question {prompt} answer ", max_length=16,
                      name="tiny-qa")


# --- classification -----------------------------------------------------------------------------

def test_classifier_adapts_the_encoder_linears_and_trains_the_head_in_full(bert_dir):
    task = classification(bert_dir)
    model = task.pretrained_model()
    layers = task.adaptable_layers(model)
    assert len(layers) == 12 and all(n.startswith("backbone.encoder.layer.") for n in layers)
    result = automl.evaluate(automl.Recipe(adapter=adapters.LoRA(rank=2), steps=40, batch_size=16, lr=1e-2), task=task)
    assert sorted(k[len("intruders/"):] for k in result.metrics if k.startswith("intruders/")) == sorted(layers)
    head = 32 * 2 + 2
    assert result.trainable_params == head + sum(2 * (m.in_features + m.out_features)
                                                           for n, m in model.named_modules() if n in layers)
    assert result.accuracy > 0.9                       # the label is one word: learnable in 40 steps
    assert {"pretrain_accuracy", "forgetting", "loss"} <= set(result.metrics)
    assert "head.weight" in result.trained_states[0]


def test_forgetting_is_the_drop_of_the_retrieval_skill(bert_dir):
    task = classification(bert_dir)
    result = automl.evaluate(automl.Recipe(adapter=adapters.FullFineTune(), steps=30, batch_size=16, lr=1e-2),
                             task=task)
    assert result.forgetting == pytest.approx(task.pretrained_accuracy - result.pretrain_accuracy)


def test_tokenization_is_cached_on_disk_by_tokenizer_texts_and_length(bert_dir, monkeypatch):
    tok = word_tokenizer()
    first = tokenize_classification(tok, ["good day", "bad day"], [1, 0], 8)
    monkeypatch.setattr(tok, "__call__", None)         # a second tokenization would fail
    again = tokenize_classification(tok, ["good day", "bad day"], [1, 0], 8)
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in first.tensors)
    monkeypatch.undo()
    longer = tokenize_classification(tok, ["good day", "bad day"], [1, 0], 12)
    assert longer.tensors["input_ids"].shape == (2, 12)


def test_batches_are_trimmed_to_their_longest_sequence():
    ids = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 0]])
    data = TextData({"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": torch.tensor([0, 1])})
    assert data.batch(torch.tensor([0]))["input_ids"].shape == (1, 2)
    assert data.batch(torch.tensor([0, 1]))["input_ids"].shape == (2, 3)
    assert [b["labels"].tolist() for b in data.chunks(1)] == [[0], [1]]


def test_bad_text_task_input_is_a_clear_error(bert_dir, tmp_path):
    with pytest.raises(automl.errors.SearchSpaceError, match="not a local model directory"):
        HFClassification(tmp_path / "missing", train=(["a"], [0]), test=(["a"], [0])).pretrained_model()
    with pytest.raises(automl.errors.SearchSpaceError, match="give train"):
        HFClassification(bert_dir, train=(["a"], [0]))
    with pytest.raises(automl.errors.SearchSpaceError, match="1 texts but 2 labels"):
        _ = HFClassification(bert_dir, train=(["a"], [0, 1]), test=(["a"], [0])).subtasks


PARITY = [
    (adapters.LoRA(rank=2, alpha=4.0), dict(r=2, lora_alpha=4.0)),
    (adapters.RsLoRA(rank=4, alpha=4.0), dict(r=4, lora_alpha=4.0, use_rslora=True)),
    (adapters.DoRA(rank=2, alpha=4.0), dict(r=2, lora_alpha=4.0, use_dora=True)),
]


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("adapter,config", PARITY, ids=["LoRA", "RsLoRA", "DoRA"])
def test_outputs_and_gradients_match_peft_on_transformer_layers(bert_dir, llama, arch, adapter, config):
    base = classification(bert_dir).pretrained_model().backbone if arch == "bert" else llama
    targets = [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    ours = adapter.apply(copy.deepcopy(base), adapter.plan(base, targets))
    perturb(ours)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(target_modules=targets, **config))
    copy_into_peft(ours, theirs)
    ids = torch.randint(5, 30, (3, 7))
    mask = torch.ones_like(ids)
    ours.eval(), theirs.eval()
    out = [m(input_ids=ids, attention_mask=mask)[0] for m in (ours, theirs)]
    assert torch.allclose(out[0], out[1], atol=1e-5)
    for o in out:
        o.square().mean().backward()
    name = targets[0]
    mine = ours.get_submodule(name).lora_B.grad
    peft_grad = theirs.base_model.model.get_submodule(name).lora_B["default"].weight.grad
    assert torch.allclose(mine, peft_grad, atol=1e-5)


EVERY_ADAPTER = [adapters.FullFineTune(), adapters.LoRA(rank=2), adapters.RsLoRA(rank=2), adapters.PiSSA(rank=2),
                 adapters.PiSSA(rank=2, init="svd_lowrank", niter=2), adapters.DoRA(rank=2), adapters.SORSA(rank=2),
                 adapters.SVFit(rank=2), adapters.LoRA(rank=4, ranks=adapters.WeLoreRanks(keep=0.9))]


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("adapter", EVERY_ADAPTER, ids=lambda a: a.label + ("-welore" if getattr(a, "ranks", None)
                                                                          else "-fast" if getattr(a, "niter", None)
                                                                          else ""))
def test_every_adapter_fine_tunes_a_transformer_and_deploys_on_its_layers(bert_dir, llama, arch, adapter):
    task = classification(bert_dir) if arch == "bert" else causal(llama)
    pretrained = task.pretrained_model()
    result = automl.evaluate(automl.Recipe(adapter=adapter, steps=3, batch_size=8, lr=1e-2), task=task)
    planned = adapter.adapted_layers(pretrained, task.adaptable_layers(pretrained))
    assert sorted(k[len("intruders/"):] for k in result.metrics if k.startswith("intruders/")) == sorted(planned)
    before, after = pretrained.state_dict(), result.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.rsplit(".", 1)[0] in planned or k.startswith("head.") for k in changed)


@pytest.mark.parametrize("adapter", [adapters.LoRA(rank=2), adapters.PiSSA(rank=2), adapters.RsLoRA(rank=2)],
                         ids=["LoRA", "PiSSA", "RsLoRA"])
def test_export_loads_in_peft_on_the_transformers_encoder(bert_dir, adapter, tmp_path):
    task = classification(bert_dir)
    result = automl.evaluate(automl.Recipe(adapter=adapter, steps=5, batch_size=8, lr=1e-2), task=task)
    export_adapter(adapter, result.trained_states[0], task.pretrained_model(), tmp_path, prefix=task.export_prefix)
    encoder = PeftModel.from_pretrained(copy.deepcopy(task.pretrained_model().backbone), str(tmp_path)).eval()
    head = nn.Linear(32, 2)
    head.load_state_dict({k[len("head."):]: v for k, v in load_file(str(tmp_path / TRAINED_MODULES)).items()})
    batch = next(task.subtasks[0].test.chunks(16))
    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    theirs = head((hidden * mask).sum(1) / mask.sum(1))
    with torch.no_grad():
        ours = result.model(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(ours, theirs, atol=1e-4)


# --- causal LM ----------------------------------------------------------------------------------

def test_causal_lm_masks_the_prompt_and_learns_the_answers(llama):
    task = causal(llama)
    sub = task.subtasks[0]
    row = sub.train.tensors
    prompt = len(task.tokenizer(task.template.format(prompt="what cat"), add_special_tokens=False)["input_ids"])
    assert (row["labels"][:, :prompt] == -100).all() and (row["labels"][:, prompt] != -100).all()
    layers = task.adaptable_layers(task.pretrained_model())
    assert len(layers) == 14 and "lm_head" not in layers
    before = task.evaluate(task.pretrained_model(), sub)
    result = automl.evaluate(automl.Recipe(adapter=adapters.LoRA(rank=4), steps=60, batch_size=16, lr=1e-2),
                             task=task)
    assert result.loss < before["loss"] - 0.3 and result.accuracy > before["accuracy"]
    assert result.perplexity == pytest.approx(torch.exp(torch.tensor(result.loss)).item(), rel=1e-4)
    assert result.forgetting == pytest.approx(result.pretrain_loss - task.pretrained_skill["pretrain_loss"])
    assert len([k for k in result.metrics if k.startswith("intruders/")]) == 14


def test_quantization_acts_on_the_adapted_layers_only(llama):
    task = causal(llama)
    result = automl.evaluate(automl.Recipe(adapter=adapters.LoRA(rank=2), quant=quant.Quantization(bits=4),
                                           steps=2, batch_size=4), task=task)
    model = result.model
    for name in task.adaptable_layers(task.pretrained_model()):
        assert len(torch.unique(model.get_submodule(name).weight[0])) <= 16
    embeddings = model.get_input_embeddings().weight
    assert torch.equal(embeddings, task.pretrained_model().get_input_embeddings().weight)


@pytest.mark.parametrize("method", [merge.TIES(density=0.5), merge.WeightMatching()], ids=["TIES", "WeightMatching"])
def test_transformer_models_of_two_subtasks_merge(llama, method):
    train, test = qa_split()
    task = causal(llama, subtasks={"a": (train, test), "b": (test, train)})
    result = automl.evaluate(automl.Recipe(adapter=adapters.FullFineTune(), merge=method, steps=3, batch_size=4),
                             task=task)
    assert {"accuracy/a", "accuracy/b", "merge/barrier"} <= set(result.metrics)
    if isinstance(method, merge.WeightMatching):
        assert result.metrics["merge/sv_change"] < 1e-4     # permutations keep singular values


def test_export_loads_in_peft_on_the_llama_model(llama, tmp_path):
    task = causal(llama)
    adapter = adapters.DoRA(rank=2)
    result = automl.evaluate(automl.Recipe(adapter=adapter, steps=4, batch_size=4, lr=1e-2), task=task)
    export_adapter(adapter, result.trained_states[0], task.pretrained_model(), tmp_path, prefix=task.export_prefix)
    loaded = PeftModel.from_pretrained(copy.deepcopy(task.pretrained_model()), str(tmp_path)).eval()
    batch = task.subtasks[0].test.batch(slice(0, 4))
    with torch.no_grad():
        ours = result.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        theirs = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_bits_count_a_tied_output_layer_once(llama):
    model = copy.deepcopy(llama)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    stored = {t.data_ptr(): t.numel() for t in model.state_dict().values()}
    bits = quant.Quantization(bits=16).bits_per_parameter(model)
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    linear = sum(model.get_submodule(n).weight.numel() for n in layers)
    expected = (16 * linear + 32 * (sum(stored.values()) - linear)) / sum(stored.values())
    assert bits == pytest.approx(expected)


def test_layers_regex_chooses_what_all_linear_adapts(bert_dir):
    task = classification(bert_dir, layers=r"backbone\.encoder\.layer\.1\..*")
    assert task.adaptable_layers(task.pretrained_model()) == [
        f"backbone.encoder.layer.1.{n}" for n in ("attention.self.query", "attention.self.key", "attention.self.value",
                                                  "attention.output.dense", "intermediate.dense", "output.dense")]
    with pytest.raises(automl.errors.SearchSpaceError, match="matches none"):
        classification(bert_dir, layers="nothing").adaptable_layers(task.pretrained_model())
