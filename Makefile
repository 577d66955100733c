# `make demo` and `make test` install into .venv when needed (a second run takes seconds).
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are what this project is tested with; override for other builds.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FAISS_EXTRA ?= cpu
STAMP := $(VENV)/.agreid-installed
DATA_ROOT ?= datasets
DEMO_DIR ?= logs/demo
# The shipped SynthCLIP (named with its recipe's fingerprint; `make synthclip` retrains it).
SYNTHCLIP ?= pretrained/SynthCLIP-Tiny-58d11b4b.safetensors
PYTEST_ARGS ?=

.PHONY: install demo test test-quick gpu-check synthclip clean-demo

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	# fastreid last and without its deps: its wheel pins torch 1.13.1 and older small libraries,
	# which this project overrides on purpose; check_install.py says so in one sentence and
	# prints any other conflict as pip reports it.
	$(PY) -m pip install -q --no-warn-conflicts -e ".[$(FAISS_EXTRA),test]"
	$(PY) -m pip install -q --no-deps fastreid==1.4.0
	$(PY) tools/check_install.py || true
	$(PY) -c "import agreid, fastreid, open_clip, faiss; print('agreid', agreid.__version__, 'installed')"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# The quick tier for daily work (under 2 minutes on 2 cores): everything not marked slow.
test-quick: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow" $(PYTEST_ARGS)

# On a CUDA machine: the CUDA-only tests, training/evaluation speed, NCCL, faiss-gpu, SynthCLIP in
# one table, in at most 8 minutes (docs/PERFORMANCE.md); elsewhere one line saying there is no GPU.
gpu-check: $(STAMP)
	$(PY) tools/gpu_check.py --data-root $(DATA_ROOT)

demo: $(STAMP)
	SYNTHCLIP=$(SYNTHCLIP) bash tools/demo.sh $(DATA_ROOT) $(DEMO_DIR)

# The caption corpus and SynthCLIP alone (reused when its inputs are unchanged; FORCE=1 trains anew). The
# repository ships the result, so only a changed recipe needs this; `make demo` runs it when the file is missing.
synthclip: $(STAMP)
	$(PY) tools/make_synthetic.py --root $(DATA_ROOT) --preset pretrain --seed 0
	$(PY) tools/pretrain_clip.py --data $(DATA_ROOT)/SyntheticCaptions --output $(SYNTHCLIP) $(if $(FORCE),--force,)

clean-demo:
	rm -rf $(DEMO_DIR)
