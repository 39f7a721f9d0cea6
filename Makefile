# `make test` and `make bench` each set up their own virtualenv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Reinstalled when the build inputs change: the C extension is compiled at install time.
BUILD_INPUTS := pyproject.toml setup.py $(sort $(wildcard asynclog/_c/*.c asynclog/_c/*.h))
STAMP := $(VENV)/.installed-$(shell cat $(BUILD_INPUTS) | cksum | cut -d' ' -f1)

.PHONY: test test-pythons bench bench-quick lint typecheck sanitize clean

$(STAMP): $(BUILD_INPUTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The unit suite on every Python the classifiers claim that this machine has (noxfile.py).
test-pythons: $(STAMP)
	$(PY) -m nox

lint: $(STAMP)
	$(PY) -m ruff check asynclog tests benchmarks example sidecar noxfile.py setup.py
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

# The C extension under AddressSanitizer and UBSan: a copy of the package with the extension
# built instrumented, imported from build/sanitize (the working directory, so it comes first),
# python with gcc's libasan preloaded and PYTHONMALLOC=malloc so freed objects are poisoned.
# Runs the tests that drive the C paths: differential Hypothesis tests, hostile input,
# snapshot races, values that change what is being encoded. Any report fails the run
# (`--capture=sys` leaves the sanitizers' reports on the real stderr). build/lib.* and
# build/temp.* go first: setuptools reuses objects newer than the sources, however compiled.
SANITIZE_DIR := build/sanitize
SANITIZE_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
SANITIZE_TESTS := test_speedups.py test_contract.py test_hostile_input.py test_encoding.py test_logger.py \
	test_writer.py test_stdlib.py
SANITIZE_ENV := LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" PYTHONMALLOC=malloc \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASYNCLOG_REQUIRE_EXTENSIONS=1
sanitize: $(STAMP)
	rm -rf $(SANITIZE_DIR) build/lib.* build/temp.*
	CC=gcc CFLAGS="$(SANITIZE_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
		$(PY) -m pip install --quiet --no-deps --target $(SANITIZE_DIR) .
	cd $(SANITIZE_DIR) && env $(SANITIZE_ENV) $(abspath $(PY)) -c 'import asynclog._speedups as s, \
		os; assert s.__file__.startswith(os.getcwd()), f"not the instrumented build: {s.__file__}"'
	cd $(SANITIZE_DIR) && env $(SANITIZE_ENV) $(abspath $(PY)) -m pytest -p no:cacheprovider \
		--capture=sys -c $(CURDIR)/pyproject.toml --rootdir $(CURDIR) \
		$(addprefix $(CURDIR)/tests/,$(SANITIZE_TESTS))

clean:
	rm -rf $(VENV) .nox .pytest_cache .mypy_cache .ruff_cache build
