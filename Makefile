# LearnedWorld — the two Quick-start commands are `make demo` and `make test`.
# Both create a virtual environment in .venv and install the package on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: install demo test system-deps clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# A plain resolve (no torch pin) gives a torch + torchvision pair that import together.
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Headless MuJoCo rendering needs EGL (Mesa) or OSMesa; installs them when run as root on Debian/Ubuntu.
system-deps:
	@bash .ci/system-deps.sh

demo: $(STAMP)
	$(BIN)/lw demo $(ARGS)

test: $(STAMP)
	@$(BIN)/python -c 'import mujoco, torch; print(f"torch {torch.__version__}, mujoco {mujoco.__version__}")'
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
