"""What goes into each image, checked without Docker: each target's wheels step, run here as the
builder stage runs it (its own DROP list, and for transcription each ENGINE), lists pyproject.toml's
dependencies less what that image never imports, and fails on an unknown engine or on a DROP
entry that names no dependency; each image's entry point still imports with every distribution
outside its dependency closure blocked, so nothing it needs was dropped; the Kubernetes client is
only in the worker's image, the one component that talks to the orchestrator; and .dockerignore
keeps the build context to what the Dockerfile copies.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from functions.common.settings import REPO_ROOT
from tests.images.support import ENGINES, PYPROJECT, TARGETS, clean_env, fake, image, stages

PROJECT = tomllib.loads(PYPROJECT.read_text())["project"]


def drop(target: str) -> set[str]:
    """The distributions the target's wheels stage leaves out (its DROP build argument)."""
    return set(map(canonicalize_name, image(target).wheels_stage(stages()).arg_default("DROP").split()))


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


# ---- the wheels step, as the builder runs it -----------------------------------------------------------


def wheels_step(tmp_path: Path, target: str, **build_args: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """Run the RUN of the target's wheels stage in a copy of its WORKDIR, with a pip that only records
    its arguments; the stage's ARGs as the environment. Returns (result, requirements.txt, pip's log)."""
    stage = image(target).wheels_stage(stages())
    (command,) = stage.all("RUN")
    src, wheels, bin_ = tmp_path / "src", tmp_path / "wheels", tmp_path / "bin"
    for folder in (src, bin_):
        folder.mkdir()
    shutil.copy(PYPROJECT, src)
    shutil.copy(REPO_ROOT / "local" / "image_requirements.py", src)
    (bin_ / "python").symlink_to(sys.executable)
    fake(bin_, "pip", f'echo "$@" > {tmp_path}/pip-args')
    args = {a.partition("=")[0]: stage.arg_default(a.partition("=")[0]) for a in stage.all("ARG")}
    env = {"PATH": f"{bin_}:/usr/bin:/bin", **args, **build_args}
    result = subprocess.run(["sh", "-c", command.replace("/wheels", str(wheels))], cwd=src, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    return result, wheels / "requirements.txt", tmp_path / "pip-args"


CASES = [(t, {}) for t in TARGETS if t != "transcription"] + [("transcription", {"ENGINE": e}) for e in ENGINES]


@pytest.mark.parametrize("target, build_args", CASES, ids=[f"{t}-{a.get('ENGINE', '')}".rstrip("-") for t, a in CASES])
def test_wheels_step_lists_the_dependencies_less_drop(tmp_path, target, build_args):
    result, requirements, pip_args = wheels_step(tmp_path, target, **build_args)
    assert result.returncode == 0, result.stderr
    extras = PROJECT["optional-dependencies"]["whisperx"] if build_args.get("ENGINE") == "whisperx" else []
    expected = names(PROJECT["dependencies"] + extras) - drop(target)
    assert names(requirements.read_text().splitlines()) == expected
    pip = pip_args.read_text().split()
    assert pip[0] == "wheel" and pip[-2:] == ["-r", str(requirements)] and "--no-cache-dir" in pip


def test_wheels_step_refuses_an_unknown_engine(tmp_path):
    result, requirements, _ = wheels_step(tmp_path, "transcription", ENGINE="whisper")
    assert result.returncode != 0 and "ENGINE must be whisperx or faster-whisper" in result.stderr
    assert not requirements.exists()


def test_a_drop_that_names_no_dependency_fails_the_build(tmp_path):
    # A renamed dependency cannot silently stay in an image.
    result, _, pip_args = wheels_step(tmp_path, "gateway", DROP="supervisor no-such-distribution")
    assert result.returncode != 0 and "no-such-distribution" in result.stderr
    assert not pip_args.exists()


# ---- each image imports its entry point without what it drops -----------------------------------------


def closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution installing these requirements brings in, as installed in this environment."""
    environment = default_environment() | {"extra": ""}
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker and not requirement.marker.evaluate(environment)):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.distribution(name).requires or []]
        except metadata.PackageNotFoundError:
            pass
    return seen


def kept(target: str) -> set[str]:
    """What the image installs (transcription: the faster-whisper build), with what that brings in."""
    dropped = drop(target)
    return closure([Requirement(r) for r in PROJECT["dependencies"] if canonicalize_name(Requirement(r).name) not in dropped])


IMAGE_CHECKS = {
    "gateway": "from functions.gateway import create_app; create_app()",
    "bot-manager": "from functions.bot_manager import create_app; create_app(); import functions.common.db",
    # The final pass's Jobs (functions/worker/finals.py) run in the transcription image too.
    "transcription": "from functions.transcription import create_app; create_app(); import functions.finalizer.__main__",
    # The worker's orchestrator is the one user of the Kubernetes client.
    "worker": "from functions.worker.app import celery_app; assert celery_app.main == 'vexa'; "
              "import functions.worker.reconciler, functions.worker.orchestrator.kubernetes",
    "bot": "import bot.__main__, bot.runner, bot.chunker, bot.sources.file, bot.sources.browser, functions.common.bot_config",
}


@pytest.mark.parametrize("target", TARGETS)
def test_image_imports_its_entry_point_without_the_dropped_dependencies(target):
    installed = kept(target) | {"vexa"}
    providers: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        providers.setdefault(module, set()).update(canonicalize_name(d) for d in dists)
    blocked = sorted(m for m, dists in providers.items() if not dists & installed and m.isidentifier())
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = set({blocked!r})
        class NotInImage:
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"{{name}} is not in the vexa-{target} image", name=name)
        sys.meta_path.insert(0, NotInImage)
        {IMAGE_CHECKS[target]}
        print("imports ok")
    """)
    env = clean_env(TRANSCRIPTION_ENGINE="faster-whisper", HF_HUB_OFFLINE="1", DATABASE_URL="postgresql+pg8000://u@127.0.0.1:1/x",
                    EVENT_SIGNING_KEY="image-test", SERVICE_TOKEN="image-test")  # the services refuse to start without them
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_worker_carries_the_kubernetes_client(target):
    # bot-manager hands launches to the worker: the worker alone talks to the orchestrator.
    assert ("kubernetes" in kept(target)) == (target == "worker")


# ---- the build context ------------------------------------------------------------------------------


def _regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern: `*`, `?` and `[...]` stay within one path segment, `**` spans any."""
    tokens = re.findall(r"\*\*|\*|\?|\[[^]]*\]|[^*?[]+", pattern)
    translate = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(translate.get(t) or (t if t.startswith("[") else re.escape(t)) for t in tokens))


def ignored(path: str) -> bool:
    """Whether docker leaves `path` out of the context: the last pattern matching it, or a folder above it, decides."""
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _regex(pattern.lstrip("!").rstrip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


# What the Dockerfile copies from the build context (every source of every COPY but COPY --from).
COPIED = sorted({source for stage in stages().values() for r in stage.all("COPY") if not r.startswith("--from")
                 for source in r.split()[:-1]})  # fmt: skip


@pytest.mark.parametrize("path", [".venv", ".git", ".vexa", ".hypothesis", "tests", "helm", "docs", "local/kind/up.sh",
                                  "vexa.egg-info", "functions/common/__pycache__", "bot/runner.pyc", "Makefile"])  # fmt: skip
def test_dockerignore_keeps_out_what_no_image_needs(path):
    assert ignored(path), f"{path} is sent to the docker daemon"


@pytest.mark.parametrize("path", COPIED + ["functions/gateway/__init__.py", "bot/__main__.py"])
def test_dockerignore_keeps_what_the_dockerfile_copies(path):
    assert not ignored(path), f"{path} is excluded but the Dockerfile copies it"


def test_the_dockerfile_copies_only_the_project():
    assert COPIED == ["README.md", "bot", "functions", "local/image_requirements.py", "pyproject.toml"]
