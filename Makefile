# Two commands on a fresh machine: `make train` (the default experiment) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# pytest-xdist workers for `make test` (auto: one per core); TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= auto

.PHONY: install train test bench report base-cifar10 readme-numbers clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train: install  ## the default experiment (offline, a few minutes on 2 CPU cores)
	$(PY) -m deltapatch.train $(ARGS)

test: install  ## the whole test suite, one worker per core (a test file stays on one worker)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 $(ARGS)

bench: install  ## speed/size ratios side by side (scripts/bench.py)
	$(PY) scripts/bench.py $(ARGS)

report: install  ## tables and plots from every results.json under RUNS (default outputs/)
	$(PY) scripts/report.py $(or $(RUNS),outputs) $(ARGS)

readme-numbers: install  ## rerun what README's measured tables come from and rewrite them (ONLY=default,sizes for some)
	$(PY) scripts/readme_numbers.py $(if $(ONLY),--only $(ONLY)) $(ARGS)

base-cifar10: install  ## the real twins' bases: ResNet-18 and ConvNeXt-Tiny trained on CIFAR-10, cached (docs/real_twins.md)
	$(PY) scripts/build_base.py $(ARGS)

clean:
	rm -rf outputs/runs outputs/multirun .pytest_cache
