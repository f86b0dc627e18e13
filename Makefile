# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# The oldest versions requirements.txt allows of the two SDKs whose APIs drift fastest, in a venv
# of their own, against the tests of the adapters built on them.
FLOORS_VENV := .venv-floors
FLOOR_PACKAGES := google-genai|supabase
ADAPTER_TESTS := tests/unit/test_ai_gemini.py tests/integration/test_store_supabase.py tests/unit/test_storage_supabase.py

.PHONY: install browser demo lint test test-floors bench lock clean

install: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(INSTALLED)

# Debian's chromium for the dashboard's browser test (tests/integration/test_dashboard.py drives it with
# Playwright; Playwright's own browser download is not used). Where apt-get cannot install it,
# say so and go on: that test then skips, naming this target.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; } || \
		echo "make browser: chromium could not be installed; the dashboard browser test will skip"

demo: $(INSTALLED)
	$(BIN)/python run_monitor.py demo

# The gates that keep the layout honest (docs/architecture.md, "Gates"), then the suites.
lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint browser
	$(BIN)/python -m pytest -q

test-floors:
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	sed -E 's/^($(FLOOR_PACKAGES))>=([^,]+),.*/\1==\2/' requirements.txt > $(FLOORS_VENV)/requirements.txt
	grep -v '^-r ' requirements-dev.txt >> $(FLOORS_VENV)/requirements.txt
	$(FLOORS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(FLOORS_VENV)/requirements.txt
	$(FLOORS_VENV)/bin/python -m pip list --format=freeze | grep -iE '^($(FLOOR_PACKAGES))=='
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider $(ADAPTER_TESTS)

bench: $(INSTALLED)
	$(BIN)/python -m bench --quick

# The production lock (no demo extra), with hashes: `pip install --require-hashes -r requirements.lock`.
lock:
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 -o requirements.lock

clean:
	rm -rf $(VENV) $(FLOORS_VENV) .demo .cache storage .pytest_cache
