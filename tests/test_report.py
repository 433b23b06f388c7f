"""The HTML report: its content, its figures rendered by headless Chromium, and the stored-weight
rebuild its spectra use."""
import functools
import html
import json
import re
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pyglove as pg
import pytest
import torch

import automl
from automl import adapters, quant
from automl.artifacts import ARTIFACT_ATTR
from automl.report import write_report
from automl.study import Study
from automl.tasks import resolve
from automl.trainer import fit
from automl.tuned import subtask_model

pytest.importorskip("matplotlib", reason="reports need the report extra")

SPACE = automl.Recipe(adapter=pg.oneof([adapters.LoRA(rank=pg.oneof([1, 2, 4])), adapters.SORSA(rank=2)]),
                      lr=pg.floatv(1e-3, 1e-2, scale="log"), steps=20)
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# a page beside the report that loads it in a frame and writes what its images rendered into its own DOM
PROBE = """<!doctype html><html><body><iframe id="r" src="report/index.html" width="1400" height="2000"></iframe>
<script>window.addEventListener("load", () => {
  const imgs = [...document.getElementById("r").contentDocument.images];
  document.body.insertAdjacentHTML("beforeend", "<pre id='result'>" + JSON.stringify(imgs.map(
    i => ({src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))) + "</pre>");
});</script></body></html>"""


def _chromium(*args, timeout=120):
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def served(tmp_path):
    """``tmp_path`` over HTTP on a free loopback port (stopped afterwards)."""
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _figures(page):
    return re.findall(r'<img src="([^"]+)"', page)


def test_report_lists_leaderboard_first_with_the_objective_formula(studies, tmp_path):
    study = Study.create("rep", SPACE, "digits", automl.Objective())
    study.optimize(4, algorithm="random", progress=False)
    page = write_report(study, tmp_path / "report").read_text()
    assert html.escape(automl.Objective().formula) in page and "['score']" not in page
    assert page.index("<h2>Leaderboard</h2>") < page.index("<img")
    figures = _figures(page)
    for name in ("history.png", "accuracy_vs_intruders.png", "layer_intruders.png", "spectra.png",
                 "importances.png"):
        assert name in figures
    assert all((tmp_path / "report" / f).is_file() for f in figures)        # self-contained: PNGs beside it


def test_report_of_three_objectives_projects_the_pareto_front(studies, tmp_path):
    objective = automl.Objective(maximize=["accuracy"], minimize=["intruders", "bits"])
    study = Study.create("rep3", SPACE, "digits", objective)
    study.optimize(3, algorithm="random", progress=False)
    page = write_report(study, tmp_path / "report").read_text()
    assert "maximize accuracy; minimize intruders, bits" in page
    figures = _figures(page)
    assert {f for f in figures if f.startswith("pareto_")} == {
        "pareto_accuracy_intruders.png", "pareto_accuracy_bits.png", "pareto_intruders_bits.png"}
    assert {f for f in figures if f.startswith("history_")} == {
        "history_accuracy.png", "history_intruders.png", "history_bits.png"}


def test_report_says_when_the_best_trial_has_no_stored_weights(studies, tmp_path):
    study = Study.create("gone", SPACE, "digits", automl.Objective())
    study.optimize(2, algorithm="random", progress=False)
    best = int(study.leaderboard()["trial"].iloc[0])
    study.artifact_store.remove(study._trial(best).system_attrs[ARTIFACT_ATTR])
    page = write_report(study, tmp_path / "report").read_text()
    assert "spectra.png" not in _figures(page)
    assert f"the best trial ({best}) has no stored weights" in page and "nothing is re-trained" in page


@pytest.mark.parametrize("adapter,bits", [(adapters.PiSSA(rank=2), 4), (adapters.SORSA(rank=2), 16),
                                          (adapters.FullFineTune(), 8)])
def test_stored_weights_rebuild_the_deployed_model(adapter, bits):
    recipe = automl.Recipe(adapter=adapter, quant=quant.Quantization(bits=bits), steps=10)
    task = resolve("digits")
    result = fit(recipe, task)
    rebuilt = subtask_model(recipe, task, 0, result.trained_states[0]).state_dict()
    deployed = result.model.state_dict()
    assert rebuilt.keys() == deployed.keys()
    assert all(torch.equal(rebuilt[k], deployed[k]) for k in deployed)


@pytest.mark.skipif(CHROMIUM is None, reason="headless check needs the Debian package chromium "
                                              "(apt-get install -y chromium; .ci/run installs it)")
def test_every_figure_renders_in_headless_chromium(studies, tmp_path, served):
    from PIL import Image
    study = Study.create("shown", SPACE, "digits", automl.Objective())
    study.optimize(4, algorithm="random", progress=False)
    page = write_report(study, tmp_path / "report").read_text()
    (tmp_path / "probe.html").write_text(PROBE)

    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", f"{served}/probe.html")
    rendered = json.loads(html.unescape(re.search(r"<pre id=\"result\">(.*?)</pre>", dom, re.S).group(1)))
    assert [i["src"] for i in rendered] == _figures(page) and len(rendered) >= 5
    for image in rendered:
        with Image.open(tmp_path / "report" / image["src"]) as png:
            assert image["complete"] and (image["width"], image["height"]) == png.size, image

    shot = tmp_path / "shot.png"
    _chromium("--window-size=1400,2400", f"--screenshot={shot}", f"{served}/report/index.html")
    with Image.open(shot) as png:
        colours = png.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 100                        # not blank


def test_formula_names_each_weighted_term_and_drops_zero_weights():
    assert automl.Objective().formula == "score = accuracy − 0.5·forgetting − 0.01·intruders − 0.001·bits"
    assert automl.Objective(forgetting=0.0, bits=0.0).formula == "score = accuracy − 0.01·intruders"
    assert automl.Objective(maximize=["accuracy"], minimize=["bits"]).formula == \
        "Pareto front: maximize accuracy; minimize bits"
