# Two commands do all the set-up: `make lab` and `make test`.
# Both create .venv when it is missing and install the package with its extras,
# using uv when it is on the PATH (faster) and pip otherwise.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV     := $(shell command -v uv 2>/dev/null)
EXTRAS := lab,redis,postgres,test,dev
PORT   ?= 8888

.PHONY: setup lab test notebooks bench serve lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed (found " + sys.version.split()[0] + ")")'
ifdef UV
	@test -x $(BIN)/python || uv venv --python $(PYTHON) $(VENV)
	@# --compile-bytecode: pip writes .pyc files at install time, uv only when asked, and
	@# with PYTHONDONTWRITEBYTECODE set every process would compile each import again
	uv pip install --quiet --compile-bytecode --python $(BIN)/python -c requirements/constraints.txt -e ".[$(EXTRAS)]"
else
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the workbook and its pinned dependencies into $(VENV) (about a minute the first time)..."
	@# -qq: errors only (some machines' pip configs add index warnings on every line)
	$(BIN)/python -m pip install -qq --disable-pip-version-check -c requirements/constraints.txt -e ".[$(EXTRAS)]"
endif
	@touch $(STAMP)

ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: setup
	@test -d notebooks/app || $(BIN)/python -m labsupport lab-app notebooks/app
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) $(ROOT_FLAG) \
		--ServerApp.root_dir=notebooks notebooks/00_start_here.ipynb

# mypy runs beside pytest (it keeps one core busy for about 20 s, while the tests
# spend much of their time waiting on servers and kernels); its report follows
# the tests', and either one failing fails the target.
test: setup
	$(BIN)/ruff check labsupport tests benchmarks notebooks
	@report=$$(mktemp); $(BIN)/mypy > $$report 2>&1 & types=$$!; \
	$(BIN)/python -m pytest; tests=$$?; \
	wait $$types; typed=$$?; echo "mypy:"; cat $$report; rm -f $$report; \
	test $$tests -eq 0 && test $$typed -eq 0

notebooks: setup
	$(BIN)/python -m labsupport notebooks run notebooks

bench: setup
	$(BIN)/python -m benchmarks

serve: setup
	$(BIN)/python -m labsupport serve --demo

lint: setup
	$(BIN)/ruff check labsupport tests benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
