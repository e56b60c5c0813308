# robustbench_lite: `make demo` and `make test` work from a fresh clone with nothing installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The oldest supported versions (constraints/minimum.txt, equal to pyproject's floors), in a venv of their own.
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed
FMNIST_DEB_DIR := /usr/share/datasets/fashion-mnist
# Reference libraries for the cross-checks; installed without their dependency pins
# (torchattacks pins requests~=2.25.1, imagecorruptions imports pkg_resources): see README.
REFERENCE_PKGS := torchattacks==3.5.1 imagecorruptions==1.1.2
# cleanlab checks the label audit's confident learning (tests only; its pandas is too new for the
# minimum-versions venv, where that test skips).
LABEL_REFERENCE_PKGS := cleanlab==2.9.0 pandas==3.1.1 termcolor==3.3.0

.PHONY: demo test test-all test-minimum bench bench-defences data browser lint clean help

help:
	@echo "make demo   - evaluate shufflenetv2 on Fashion-MNIST (trains a quick baseline on first use)"
	@echo "make test   - run the fast test suite"
	@echo "make test-minimum - the fast suite on the oldest supported versions (constraints/minimum.txt)"
	@echo "make bench  - side-by-side speed benchmarks against the peer libraries"
	@echo "make bench-defences - standard vs fgsm-rs/pgd-at/trades/augmix training (about an hour on 2 cores)"

$(STAMP): pyproject.toml constraints/ci.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/ci.txt -e '.[dev,timm,onnx]'
	$(BIN)/pip install --quiet -c constraints/ci.txt --no-deps $(REFERENCE_PKGS) $(LABEL_REFERENCE_PKGS)
	touch $(STAMP)

data:
	@if [ -f $(FMNIST_DEB_DIR)/t10k-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: $(FMNIST_DEB_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Fashion-MNIST: installing Debian package dataset-fashion-mnist"; \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "Fashion-MNIST: apt install failed; robust-eval will fall back to torchvision's download"; \
	else \
		echo "Fashion-MNIST: apt not usable here; robust-eval will fall back to torchvision's download"; \
	fi

# Headless Chromium for the HTML report's browser test (tests/test_report.py); the test skips without it.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Chromium: installing Debian package chromium (for the report's browser test)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "Chromium: apt install failed; the browser test will be skipped"; \
	else \
		echo "Chromium: apt not usable here; the browser test will be skipped"; \
	fi

demo: $(STAMP) data
	$(BIN)/robust-eval --model shufflenetv2 --suite clean,efficiency,corruptions \
		--html reports/demo.html --json reports/demo.json

test: $(STAMP) data browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

$(MIN_STAMP): pyproject.toml constraints/minimum.txt
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/pip install --quiet --only-binary=:all: -r constraints/minimum.txt
	$(MIN_VENV)/bin/pip install --quiet --no-deps -e .
	$(MIN_VENV)/bin/pip install --quiet --no-deps $(REFERENCE_PKGS)
	touch $(MIN_STAMP)

test-minimum: $(MIN_STAMP) data
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider

test-all: $(STAMP) data browser
	$(BIN)/python -m pytest -q -m "" -p no:cacheprovider

bench: $(STAMP) data
	$(BIN)/python benchmarks/bench_attacks.py
	$(BIN)/python benchmarks/bench_corruptions.py
	$(BIN)/python benchmarks/bench_autoattack.py

bench-defences: $(STAMP) data
	$(BIN)/python benchmarks/bench_defences.py --out reports/bench_defences

lint: $(STAMP)
	$(BIN)/ruff check robustbench_lite attacks corruptions tests benchmarks

clean:
	rm -rf $(VENV) $(MIN_VENV) build *.egg-info
