"""Trained weights kept for the best trials, and `Study.export` / `automl export`."""
import json

import pyglove as pg
import torch
from safetensors.torch import load_file

import automl
from automl import adapters
from automl.artifacts import ARTIFACT_ATTR
from automl.cli import main
from automl.study import Study

SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2, 4])), adapters.SORSA(rank=2)]),
                      lr=pg.floatv(1e-3, 1e-2, scale="log"), steps=40)


def test_only_the_best_trials_keep_weights(studies):
    study = Study.create("keep", SPACE, "digits", automl.Objective())
    study.keep_artifacts = 2
    study.optimize(5, algorithm="random", progress=False)
    files = [p for p in (studies / "artifacts" / "keep").rglob("*") if p.is_file()]
    assert len(files) == 2
    best = study.leaderboard()["trial"].iloc[:2].tolist()
    assert {t.number for t in study.trials() if t.system_attrs.get(ARTIFACT_ATTR)} == set(range(5))
    kept = study.artifact_store
    for number in best:
        kept.open_reader(study._trial(number).system_attrs[ARTIFACT_ATTR]).close()


def _tensors(folder):
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_export_from_stored_weights_equals_retrained_export(studies, tmp_path):
    study = Study.create("exp", SPACE, "digits", automl.Objective())
    study.keep_artifacts = 1
    study.optimize(3, algorithm="random", progress=False)
    board = study.leaderboard()
    best, worst = int(board["trial"].iloc[0]), int(board["trial"].iloc[-1])
    stored = study.export(best, tmp_path / "best")[0]
    assert json.loads((stored / "automl_adapter.json").read_text())["_type"].startswith("automl.adapters")
    # the same trial exported from freshly re-trained weights (its artifact removed)
    study.artifact_store.remove(study._trial(best).system_attrs[ARTIFACT_ATTR])
    retrained = study.export(best, tmp_path / "best-again")[0]
    a, b = _tensors(stored), _tensors(retrained)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a trial whose weights were pruned exports too (re-trained from its recipe)
    assert _tensors(study.export(worst, tmp_path / "worst")[0])


def test_cli_export_writes_peft_loadable_lora(studies, tmp_path, capsys):
    peft = __import__("peft")
    space_file = tmp_path / "lora_space.py"
    space_file.write_text("import pyglove as pg, automl\nfrom automl import adapters\n"
                          "SPACE = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([2, 4])), steps=40)\n")
    assert main(["search", str(space_file), "--trials", "2", "--study", "cliexp", "--quiet", "--algorithm", "random"]) == 0
    capsys.readouterr()
    assert main(["export", "cliexp", "0", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert "wrote" in capsys.readouterr().out
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    task = automl.tasks.get("digits")
    base = task.initial_model(task.subtasks[0])
    loaded = peft.PeftModel.from_pretrained(base, str(out)).eval()
    study = Study.load("cliexp")
    deployed = automl.evaluate(study.recipe(0), "digits").model.eval()
    x = task.subtasks[0].test.x[:32]
    with torch.no_grad():
        assert torch.allclose(loaded(x), deployed(x), atol=1e-4)
    assert load_file(str(out / "adapter_model.safetensors"))
