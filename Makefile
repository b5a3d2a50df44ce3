# The two set-up commands of the README: `make demo` (main job) and `make test` (tests).
# Each creates .venv if it is missing, installs torch==2.13.0 first, then the package.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: demo test test-slow install clean bench-real

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cardiorecon demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q

# The slow tests: end-to-end golden cases, the 2-process DDP run, and the long fuzzing runs (hypothesis).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) out

# The real-data benchmark (needs ../shared/data): every method on biv-me, Sunnybrook and ep_preclinical.
bench-real: $(STAMP)
	$(PY) benchmarks/bench_real.py --out out/bench-real
