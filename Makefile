# The README's two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: a requirement that lets pip choose would fetch a multi-GB CUDA build.
# 2.13.0 is the CPU wheel these machines carry; override TORCH_SPEC elsewhere if you like.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/xdream-ts demo

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf $(VENV) demo-output .pytest_cache
