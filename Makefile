# The project's tasks. `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PROTO_OUT := runtime/protocol

.PHONY: install install-dev bytecode proto check test test-newer demo bench bench-compare clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,dev]' --config-settings editable_mode=compat
	touch $@

install: $(STAMP)

# The package's bytecode, written ahead (only what changed): every worker process
# imports the runtime, and where PYTHONDONTWRITEBYTECODE is set (or the tree is
# read-only) each would compile it again, about 0.3 s of CPU per process.
bytecode: $(STAMP)
	$(PY) -m compileall -q runtime

install-dev: $(DEV_STAMP)

# Regenerates the betterproto2 messages and grpclib stubs from proto/ (committed).
proto: $(DEV_STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH OUT=$(PROTO_OUT) sh scripts/gen_proto.sh

# ruff, the formatter, mypy, the import contracts (pyproject.toml) and the generated code.
check: $(DEV_STAMP)
	$(VENV)/bin/ruff check runtime tests examples
	$(VENV)/bin/ruff format --check runtime tests examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	PATH=$(abspath $(VENV))/bin:$$PATH sh scripts/check_proto.sh

test: bytecode
	$(PY) -m pytest -q

# The suite again on the newest other Python this machine has (3.13, else 3.12; found on
# the PATH or under pyenv), in a venv of its own; skipped, saying so, when there is none.
NEWER_PYTHON ?= $(shell for v in 3.13 3.12; do \
	for p in python$$v $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v*/bin/python 2>/dev/null); do \
	$$p -c 'import sys' >/dev/null 2>&1 && echo $$p && exit 0; done; done)
NEWER_VENV := .venv-newer

test-newer:
	@if [ -z "$(NEWER_PYTHON)" ]; then echo "test-newer: no Python 3.12 or 3.13 here; skipped"; exit 0; fi
	$(NEWER_PYTHON) -m venv $(NEWER_VENV)
	$(NEWER_VENV)/bin/python -m pip install -q --upgrade pip
	$(NEWER_VENV)/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(NEWER_VENV)/bin/python -m compileall -q runtime
	$(NEWER_VENV)/bin/python -m pytest -q

demo: bytecode
	$(PY) examples/quickstart.py

bench: bytecode
	$(VENV)/bin/runtime microbenchmark

# Ray's microbenchmark (Ray installed once into .venv-ray) and ours, back to back,
# with the ratio of each shared row. Prints; asserts nothing.
bench-compare: bytecode
	$(PY) scripts/bench_compare.py

clean:
	rm -rf $(VENV) $(NEWER_VENV) .venv-ray build *.egg-info
