# One-command set-up: every target creates .venv if it is missing and installs
# the package with what the target needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to a pair that installs together (the
# model-zoo tests need both); pip takes them from the local wheel store here.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench coverage docs clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[test,keras,onnx,sklearn]"
	touch $@

$(VENV)/.docs-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[docs,notebooks,keras,onnx,sklearn]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m innsight demo

# Headless Chromium for the test that opens plotly's HTML output
# (tests/plotting/test_browser.py). Installed from Debian's packages when
# missing and running as root; otherwise skipped here and that test fails
# with a message saying how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make browser: chromium is missing; installing Debian's chromium package with" \
	      "apt-get as root (for tests/plotting/test_browser.py)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not found and not root: tests/plotting/test_browser.py will fail"; fi; }

test: $(VENV)/.installed browser
	$(BIN)/python -m pytest -n 2 -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_forward.py
	$(BIN)/python benchmarks/bench_gradients.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_rules.py
	$(BIN)/python benchmarks/bench_agnostic.py
	$(BIN)/python benchmarks/bench_metrics.py

# One model per family of timm and torchvision, and every Keras application: which
# convert, which are refused (and by which operation), and for Keras how far the float32
# gradients lie from tf.GradientTape; timm comes from the `coverage` extra. Takes a
# while on 2 cores (the Keras sweep about an hour).
coverage: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[coverage]"
	$(BIN)/python benchmarks/coverage.py torchvision
	$(BIN)/python benchmarks/coverage.py timm
	$(BIN)/python benchmarks/coverage.py keras

# The documentation site in site/ (mkdocs.yml), strict: any warning fails the build.
# The teaching notebooks run in a Jupyter kernel (about 1.5 min on 2 cores; kept in
# build/docs-notebooks/ until they or the package change); the coverage tables are
# generated from the converter's registries (docs/hooks/).
docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict
	@echo "The site is in site/: open site/index.html"

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache
