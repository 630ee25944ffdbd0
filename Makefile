# Two entry points: `make demo` and `make test`. Both create or reuse .venv and install what is missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-venv)
	@command -v elastix >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq elastix) \
		|| echo "note: no elastix package installed; registration falls back to the itk-elastix wheel"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ctmr-register --demo --output-dir ctmr-demo-output

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) ctmr-demo-output
