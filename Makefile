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

.PHONY: help install up down ps logs logs-gateway logs-bot-manager logs-transcription logs-broker \
        run-bot stop-bot demo test clean

help:
	@echo "make demo        start everything, send a bot to the sample meeting, print its transcript"
	@echo "make up | down   start / stop the stack (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL)"
	@echo "make ps          services and bots;  make logs[-gateway|-bot-manager|-transcription|-broker]"
	@echo "make run-bot USER=u MEETING=m [URL=recording] [SPEED=1.0]   send a bot;  make stop-bot USER=u MEETING=m"
	@echo "make test        the test suite (needs PostgreSQL and Redis: see README)"
	@echo "make clean       stop and delete all local state (databases, logs, bots)"

# The virtual environment, rebuilt when pyproject.toml changes.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[whisperx,test]'
	touch $@

install: $(INSTALLED)

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
	$(CLIENT) run --user '$(USER)' --meeting '$(MEETING)' --url '$(URL)' --speed $(SPEED)

stop-bot: $(INSTALLED)
	$(CLIENT) stop --user '$(USER)' --meeting '$(MEETING)'

demo: up
	$(CLIENT) run --user demo --meeting 'demo-$(shell date +%Y%m%d-%H%M%S)' --speed $(DEMO_SPEED) \
	    --title "Sample stand-up" --follow

test: $(INSTALLED)
	$(PY) -m local.testenv $(PY) -m pytest $(PYTEST_ARGS)

clean: $(INSTALLED)
	$(STACK) clean
