# Two commands do all set-up themselves: `make demo` and `make test`.
# The venv is (re)installed only when missing or when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-under-load install lint clean gateway-deps bench-quality

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	# CPU torch first, so nothing below pulls the multi-GB CUDA build.
	$(VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medfed demo

TEST_COMMAND := $(VENV)/bin/python -m pytest -q

test: $(STAMP) gateway-deps
	$(TEST_COMMAND)

# The same tests next to two CPU-bound processes (a busy, shared machine): every timeout in
# the tests scales with the speed measured at the start (tests/conftest.py). Exactly the two
# busy processes started here are stopped again, whatever the tests' outcome.
test-under-load: $(STAMP) gateway-deps
	@$(VENV)/bin/python -c 'while True: pass' & hog1=$$!; \
	$(VENV)/bin/python -c 'while True: pass' & hog2=$$!; \
	trap 'kill $$hog1 $$hog2 2>/dev/null' EXIT INT TERM; \
	echo "two CPU-bound processes running: $$hog1 $$hog2"; \
	$(TEST_COMMAND)

# The quality table of BENCHMARKS.md (issue 19): 9 scenarios x 3 seeds of `medfed simulate`;
# about 5 h on 2 cores (benchmarks/quality_walltime.py). Finished runs in runs/quality are read, not re-run.
bench-quality: $(STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/python benchmarks/quality_table.py --runs-dir runs/quality

# nginx (Debian nginx-light) is the Fleet-only gateway exercised by tests/test_gateway.py.
gateway-deps:
	@scripts/ensure-nginx.sh

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
