"""The automl command: real runs, one-line errors with exit code 2."""
import pytest

from automl.cli import main

SPACE_FILE = '''
import pyglove as pg, automl
from automl import adapters
SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 4])), adapters.FullFineTune()]),
                      lr=pg.floatv(1e-4, 1e-2, scale="log"), steps=20)
TASK = "digits"
'''


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny_space.py"
    path.write_text(SPACE_FILE)
    return str(path)


def test_search_leaderboard_show_studies(studies, space_file, capsys):
    assert main(["search", space_file, "--trials", "3", "--study", "cli", "--algorithm", "random", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "study 'cli': 3 trials" in out and "score" in out and "recipe" in out
    assert main(["leaderboard", "cli", "--top", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines[0].startswith("score = accuracy") and lines[1].startswith("every row:")
    assert len(lines) == 5                                 # objective, folded constants, columns, 2 rows
    assert main(["show", "cli", "0"]) == 0
    shown = capsys.readouterr().out
    assert "Recipe(" in shown and "\n  accuracy " in shown and "COMPLETE" in shown
    assert main(["studies"]) == 0
    assert "cli" in capsys.readouterr().out
    # running the same search again resumes the study
    assert main(["search", space_file, "--trials", "1", "--study", "cli", "--quiet"]) == 0
    assert "study 'cli': 4 trials" in capsys.readouterr().out


def test_reproduce_prints_stored_and_new_metrics(studies, space_file, capsys):
    main(["search", space_file, "--trials", "1", "--study", "rep", "--algorithm", "random", "--quiet"])
    capsys.readouterr()
    assert main(["reproduce", "rep", "0"]) == 0
    out = capsys.readouterr().out
    assert "stored" in out and "reproduced" in out and "accuracy" in out


def test_report_writes_html_and_figures(studies, space_file, tmp_path, capsys):
    main(["search", space_file, "--trials", "5", "--study", "rpt", "--algorithm", "random", "--quiet"])
    assert main(["report", "rpt", "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Leaderboard" in page and "accuracy_vs_intruders.png" in page
    assert (tmp_path / "r" / "accuracy_vs_intruders.png").stat().st_size > 1000
    assert (tmp_path / "r" / "history.png").exists()


def test_ready_space_module_loads():
    from automl.cli import load_space_module
    module = load_space_module("digits")
    assert module.TASK == "digits" and hasattr(module, "SPACE")


@pytest.mark.parametrize("argv, message", [
    (["leaderboard", "ghost"], "no study 'ghost'"),
    (["search", "no_such_space"], "no search space 'no_such_space'"),
    (["search", "digits", "--task", "mnist", "--trials", "1"], "unknown task 'mnist'"),
    (["leaderboard", "x", "--storage", "bogus://nowhere"], "cannot open storage"),
])
def test_errors_are_one_line_with_exit_code_2(studies, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("automl: error:") and message in err and "\n" not in err


def test_unknown_algorithm_is_a_one_line_usage_error(capsys):
    assert main(["search", "digits", "--algorithm", "annealing"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'annealing'" in err and err.startswith("automl: error:") and err.count("\n") == 1


def test_replicate_reruns_one_finding_and_saves_its_table(tmp_path, monkeypatch, capsys):
    from pathlib import Path
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["replicate", "pissa", "--small", "--seeds", "1", "--out", str(tmp_path)]) == 0
    assert "PiSSA" in capsys.readouterr().out
    assert (tmp_path / "table.md").exists() and (tmp_path / "figure.png").exists()


@pytest.mark.parametrize("argv,threads", [([], 1), (["--threads", "3"], 3), (["--threads", "0"], 0)])
def test_a_trial_process_gets_one_torch_thread_unless_told(argv, threads, monkeypatch, studies):
    import automl.devices
    seen = []
    monkeypatch.setattr(automl.devices, "set_cpu_threads", seen.append)
    assert main(["reproduce", "no-such-study", "0", *argv]) == 2      # refused after the policy is applied
    assert seen == [threads]


def test_thread_policy_sets_torch_threads():
    import torch
    from automl.devices import set_cpu_threads
    from automl.errors import DeviceError
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_cpu_threads(0) == 1                                   # 0 keeps what is in force
        with pytest.raises(DeviceError, match="non-negative"):
            set_cpu_threads(-1)
    finally:
        torch.set_num_threads(before)
