"""optuna-dashboard reads our studies: objective names, params, metrics, and every listed artifact
downloads (pruned weights are no longer listed)."""
import json
import threading
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pyglove as pg
import pytest

import automl
from automl import adapters
from automl.study import Study

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the test extra")

SPACE = automl.Recipe(adapter=adapters.LoRA(rank=pg.oneof([1, 2, 4])), lr=pg.floatv(1e-3, 1e-2, scale="log"),
                      steps=20)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def dashboard():
    """Serve optuna-dashboard (its WSGI app) for a storage URL and artifact store on a free
    loopback port; yields a function returning the base URL; stops the server afterwards."""
    servers = []

    def start(storage_url, artifact_store):
        app = optuna_dashboard.wsgi(storage_url, artifact_store=artifact_store)
        server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _api(base, path):
    status, body = _get(base + path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


def _study(base, name):
    ids = {s["study_name"]: s["study_id"] for s in _api(base, "/api/studies")["study_summaries"]}
    return ids[name], _api(base, f"/api/studies/{ids[name]}")


def test_dashboard_reads_names_params_metrics_and_every_listed_artifact(studies, dashboard):
    study = Study.create("dash", SPACE, "digits", automl.Objective())
    study.keep_artifacts = 2
    study.optimize(5, algorithm="random", progress=False)
    base = dashboard(study.storage_url, study.artifact_store)

    study_id, detail = _study(base, "dash")
    assert detail["objective_names"] == ["score"]                          # not "Objective 0"
    best = study.leaderboard()["trial"].iloc[0]
    trial = next(t for t in detail["trials"] if t["number"] == best)
    params = {p["name"]: p["param_external_value"] for p in trial["params"]}
    assert params == {k: str(v) for k, v in study._trial(int(best)).params.items()}
    attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
    assert float(attrs["accuracy"]) == pytest.approx(study.metrics(int(best))["accuracy"])
    assert "intruders" in attrs and "automl:recipe" not in attrs           # metrics only, no bookkeeping

    listed = [(t["trial_id"], t["number"], a["artifact_id"]) for t in detail["trials"] for a in t["artifacts"]]
    assert sorted(n for _, n, _ in listed) == sorted(study.leaderboard()["trial"].iloc[:2])  # the kept ones only
    for trial_id, _, artifact_id in listed:
        status, body = _get(f"{base}/artifacts/{study_id}/{trial_id}/{artifact_id}")
        assert status == 200 and body[:8]                                   # a safetensors header


def test_multi_objective_names_reach_the_dashboard(studies, dashboard):
    objective = automl.Objective(maximize=["accuracy"], minimize=["intruders"])
    study = Study.create("dash2", SPACE, "digits", objective)
    study.optimize(2, algorithm="random", progress=False)
    _, detail = _study(dashboard(study.storage_url, study.artifact_store), "dash2")
    assert detail["objective_names"] == ["accuracy", "intruders"]
    assert detail["directions"] == ["maximize", "minimize"]
