"""What the tests of tests/images/ share: the repo's paths, running a command in a clean
environment, fake tools on a PATH, and a reader of the repo root's Dockerfile that resolves each
build target the way BuildKit does (the chain of stages it is built FROM, the ENV, USER,
ENTRYPOINT, CMD and EXPOSE the image ends up with, and the stage whose wheels it installs), so
that tests check the image a target produces rather than the lines that produce it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from functions.common.settings import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
KIND = REPO_ROOT / "local" / "kind"
SCRIPTS = sorted(KIND.glob("*.sh"))
PYPROJECT = REPO_ROOT / "pyproject.toml"
VERSION = re.search(r'^version = "(.+)"$', PYPROJECT.read_text(), re.M).group(1)
VENV_BIN = Path(sys.executable).parent

# The build targets, one per image <registry>/vexa-<target>:<tag> (the chart's scheme).
TARGETS = ("gateway", "bot-manager", "transcription", "worker", "bot")
# The targets that are Knative Services, and the Python package each serves.
SERVICES = {"gateway": "gateway", "bot-manager": "bot_manager", "transcription": "transcription"}
ENGINES = ("whisperx", "faster-whisper")


def tool(name: str) -> str | None:
    found = VENV_BIN / name
    return str(found) if found.exists() else shutil.which(name)


def run(*argv: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the variables the Makefile and scripts read."""
    env = {k: v for k, v in os.environ.items() if k not in ("TAG", "REGISTRY", "ENGINE", "DRY_RUN", "HELM_EXTRA_ARGS",
                                                              "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return env | extra


def shell_env(path: str) -> dict[str, str]:
    return {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


def fake(folder: Path, name: str, body: str) -> None:
    """An executable `name` in `folder` that runs the sh snippet `body`."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def make_image_builds(*args: str) -> list[list[str]]:
    """The `docker build` commands `make -n images ARGS` would run, each as its argv."""
    result = run("make", "-n", "images", *args, env=clean_env())
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line.startswith("docker build")]


def option(argv: list[str], name: str) -> list[str]:
    """Every value of `name VALUE` in argv."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


# ---- the Dockerfile ----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str | None
    base: str  # an image reference or an earlier stage's name
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined

    def all(self, keyword: str) -> list[str]:
        return [rest for k, rest in self.instructions if k == keyword]

    def arg_default(self, name: str) -> str | None:
        for rest in self.all("ARG"):
            key, _, value = rest.partition("=")
            if key == name:
                return shlex.split(value)[0] if value else ""
        return None


@dataclass
class Image:
    """What a build target produces: its stages (base first) and its final configuration."""

    target: str
    chain: list[Stage]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    exposed: set[str] = field(default_factory=set)

    @property
    def base_image(self) -> str:
        return self.chain[0].base

    def runs(self) -> list[str]:
        return [rest for stage in self.chain for rest in stage.all("RUN")]

    def mounts(self) -> list[tuple[str, str]]:
        """(stage mounted from, the RUN command) for each RUN --mount=type=bind,from=STAGE."""
        found = []
        for command in self.runs():
            for mount in re.findall(r"--mount=(\S+)", command):
                options = dict(o.partition("=")[::2] for o in mount.split(","))
                if options.get("type") == "bind" and "from" in options:
                    found.append((options["from"], command))
        return found

    def wheels_stage(self, stages: dict[str, Stage]) -> Stage:
        """The stage whose /wheels/requirements.txt this image installs."""
        (source,) = [s for s, command in self.mounts() if "-r /wheels/requirements.txt" in command]
        return stages[source]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1]  # as docker joins them: the backslash and newline go
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def stages(dockerfile: Path = DOCKERFILE) -> dict[str, Stage]:
    """The Dockerfile's stages by name (an unnamed stage by its index), in order."""
    result: dict[str, Stage] = {}
    for keyword, rest in instructions(dockerfile.read_text()):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stage = Stage(name, words[0], [])
            result[name or str(len(result))] = stage
        stage.instructions.append((keyword, rest))
    return result


def _env(rest: str) -> dict[str, str]:
    pairs = shlex.split(rest)
    assert all("=" in pair for pair in pairs), f"ENV KEY=VALUE expected: {rest}"
    return dict(pair.partition("=")[::2] for pair in pairs)


def image(target: str, dockerfile: Path = DOCKERFILE) -> Image:
    """The image `docker build --target TARGET` produces, as far as its configuration goes."""
    all_stages = stages(dockerfile)
    chain = [all_stages[target]]
    while chain[0].base in all_stages:
        chain.insert(0, all_stages[chain[0].base])
    result = Image(target, chain)
    for stage in chain:
        for keyword, rest in stage.instructions:
            if keyword == "ENV":
                result.env |= _env(rest)
            elif keyword == "USER":
                result.user = rest
            elif keyword == "EXPOSE":
                result.exposed |= set(rest.split())
            elif keyword == "ENTRYPOINT":
                result.entrypoint, result.cmd = json.loads(rest), None  # a new ENTRYPOINT resets CMD
            elif keyword == "CMD":
                result.cmd = json.loads(rest)
    return result
