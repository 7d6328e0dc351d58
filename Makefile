# world2act: two commands do everything on a fresh machine.
#   make demo  - set up, then run the main job (the `quick` pipeline) into runs/demo
#   make test  - set up, then run the test suite
.PHONY: setup demo test test-fast bench clean

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.world2act-setup-stamp
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/world2act pipeline --preset quick --out runs/demo --resume

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow" tests

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-lerobot runs build *.egg-info src/*.egg-info
