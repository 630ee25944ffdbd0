# Entry points: `make demo` and `make test` (the README's), `make test-fast` for the inner loop, `make lint`,
# `make bench`, `make web` (ctmr-web on 127.0.0.1:8080; PORT=N for another port), `make screenshots`. Each creates
# or reuses .venv and installs what is missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared/data/mridir-porcine)
BENCH_CASES ?= 6
# pytest-xdist workers, at most 4 (each test module runs whole on one worker, so its fixtures are built once)
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PYTEST := $(PY) -m pytest -q -n $(WORKERS) --dist loadfile

.PHONY: demo web screenshots test test-fast lint bench docs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-venv)
	@command -v elastix >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq elastix) \
		|| echo "note: no elastix package installed; registration falls back to the itk-elastix wheel"
	@command -v dciodvfy >/dev/null 2>&1 && command -v plastimatch >/dev/null 2>&1 \
		|| (apt-get update -qq && apt-get install -y -qq --no-install-recommends dicom3tools plastimatch) \
		|| echo "note: dicom3tools/plastimatch not installed; the DICOM REG validation tests will skip"
	@# ctmr-web renders its slice views offscreen through EGL on Mesa (llvmpipe); its browser tests drive Chromium
	@command -v chromium >/dev/null 2>&1 && ldconfig -p | grep -q libEGL_mesa \
		|| (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium libegl1 libegl-mesa0 \
			libgl1-mesa-dri libgbm1) \
		|| echo "note: chromium or Mesa EGL not installed; the browser tests will skip"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[batch,test,web]"
	@# slicer-layer-dm pins slicer-core 5.11; without its pin it runs on the slicer-core installed above
	$(PY) -m pip install -q --no-deps "slicer-layer-dm>=2,<3"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ctmr-register --demo --output-dir ctmr-demo-output

web: $(STAMP)
	$(VENV)/bin/ctmr-web --data-root . --host 127.0.0.1 --port $(or $(PORT),8080)

screenshots: $(STAMP)
	$(PY) docs/screenshots.py

test: $(STAMP)
	$(PYTEST) --durations=15

test-fast: $(STAMP)
	$(PYTEST) -m "not slow and not browser"

docs: $(STAMP)
	$(PY) docs/build_reference.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	CTMR_SHARED_DATA=$(SHARED) $(PY) bench/speed_benchmark.py --repeats 3 --threads 2
	CTMR_SHARED_DATA=$(SHARED) $(PY) bench/engine_benchmark.py --threads 2
	CTMR_SHARED_DATA=$(SHARED) $(PY) bench/capture_benchmark.py --cases $(BENCH_CASES) --threads 2
	CTMR_SHARED_DATA=$(SHARED) $(PY) bench/qa_benchmark.py --cases $(BENCH_CASES) --threads 2

clean:
	rm -rf $(VENV) ctmr-demo-output
