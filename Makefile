# Quick start:  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.attnas-installed

.PHONY: demo test docs install install-compare lint clean

# (Re)install when the venv is missing, pyproject changed, or TORCH differs from last time.
install:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || ! grep -qxF '$(TORCH)' $(STAMP); then \
		$(BIN)/pip install '$(TORCH)' && \
		$(BIN)/pip install -e '.[dev,export,tensorboard,sweep]' && \
		echo '$(TORCH)' > $(STAMP); \
	fi

# pytorchvideo for benchmarks/vs_pytorchvideo.py (from PyPI; builds three sdists, ~1 min)
install-compare: install
	$(BIN)/pip install -e '.[compare]'

demo: install
	$(BIN)/attnas demo

lint: install
	$(BIN)/ruff check .

# the docs site (README + docs/ + benchmarks/results/, mkdocs.yml); --strict: a broken link
# or anchor fails. Output in .site/ (ignored)
docs: install
	$(BIN)/mkdocs build --strict -q -d .site

test: install
	$(BIN)/ruff check .
	$(BIN)/mkdocs build --strict -q -d .site
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) runs data/synth .site
