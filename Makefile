# `make demo`: set up .venv, then train VOGN (sample-parallel under mpiexec),
# Adam and MC dropout on the bundled digits and evaluate them together
# (jobscripts/local.sh).  `make test`: build both virtual environments from
# nothing and run the whole suite on each.  `make test-fast`: the unit tests
# only (pytest -m unit), on the Python 3.11 environment, for the edit-test
# loop; `make test-mpi`, `make test-e2e`, `make test-install` (README's pip
# line in a new venv, from nothing) likewise (markers: pyproject.toml).
# An interpreter of the given version that really runs (pyenv shims of
# versions that are installed but not selected do not).
find_python = $(firstword $(foreach p,python$(1) $(wildcard $(HOME)/.pyenv/versions/$(1)*/bin/python$(1)),\
	$(if $(shell $(p) -c 'import sys' 2>/dev/null && echo ok),$(p))))
PYTHON311 ?= $(call find_python,3.11)
PYTHON312 ?= $(call find_python,3.12)
VENV ?= .venv
VENV_NUMPY2 ?= .venv-py312
PYTEST_ARGS ?= -q

# Chainer 7.8.1 builds only with setuptools<82.  pip is upgraded first, so
# PIP_BUILD_CONSTRAINT (pip >= 25.3) pins that in chainer's build environment
# alone, and the NumPy 2 stack still gets the newest setuptools itself.
PIP_ENV = PIP_BUILD_CONSTRAINT=$(CURDIR)/requirements/build.txt PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: demo test test-py311 test-py312 test-fast test-mpi test-e2e test-install env clean

test: test-py311 test-py312

demo: $(VENV)/.installed
	PYTHON=$(CURDIR)/$(VENV)/bin/python MPIEXEC=$(CURDIR)/$(VENV)/bin/mpiexec \
		bash jobscripts/local.sh

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/py311.txt requirements/build.txt
	@test -n "$(PYTHON311)" || { echo 'make: no working python3.11 found; install it (pyenv install 3.11) or run make PYTHON311=/path/to/python3.11' >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON311) -m venv $(VENV)
	$(PIP_ENV) $(VENV)/bin/python -m pip install -q --upgrade pip
	$(PIP_ENV) PIP_CONSTRAINT=$(CURDIR)/requirements/py311.txt \
		$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

$(VENV_NUMPY2)/.installed: pyproject.toml requirements/py312-numpy2.txt requirements/build.txt
	@test -n "$(PYTHON312)" || { echo 'make: no working python3.12 found; install it (pyenv install 3.12) or run make PYTHON312=/path/to/python3.12' >&2; exit 1; }
	rm -rf $(VENV_NUMPY2)
	$(PYTHON312) -m venv $(VENV_NUMPY2)
	$(PIP_ENV) $(VENV_NUMPY2)/bin/python -m pip install -q --upgrade pip setuptools
	$(PIP_ENV) PIP_CONSTRAINT=$(CURDIR)/requirements/py312-numpy2.txt \
		$(VENV_NUMPY2)/bin/python -m pip install -q -e '.[test]'
	touch $@

test-py311: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-py312: $(VENV_NUMPY2)/.installed
	$(VENV_NUMPY2)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) -m unit

test-mpi test-e2e test-install: test-%: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) -m $*

clean:
	rm -rf $(VENV) $(VENV_NUMPY2) build *.egg-info
