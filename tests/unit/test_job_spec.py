"""Where the worker's Jobs run, and what keeps a bot running (functions/worker/orchestrator/job_spec.py).

Each program's pods go where its own settings say, BOT_NODE_SELECTOR and BOT_TOLERATIONS for bots,
FINAL_NODE_SELECTOR and FINAL_TOLERATIONS for final passes, read by one parser that names the
setting it cannot read; a bot's pod tells the cluster autoscaler not to evict it.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from functions.common.settings import Settings
from functions.worker.orchestrator import BotSpec, Program
from functions.worker.orchestrator.job_spec import SAFE_TO_EVICT, build_job, placement

BOTS_POOL = [{"key": "vexa.ai/pool", "operator": "Equal", "value": "bots", "effect": "NoSchedule"}]
GPU_POOL = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
BOTH = {  # both programs' placements set, each to its own pool
    "BOT_NODE_SELECTOR": "vexa.ai/pool=bots",
    "BOT_TOLERATIONS": json.dumps(BOTS_POOL),
    "FINAL_NODE_SELECTOR": " cloud.google.com/gke-accelerator = nvidia-l4 ,pool=final",
    "FINAL_TOLERATIONS": json.dumps(GPU_POOL),
}


def pod_template(program: Program, **env: str) -> dict[str, Any]:
    """The pod template of a Job for `program`, built with settings `env`."""
    spec = BotSpec("bot-erin-weekly-0123456789", {}, {"user": "erin", "meeting": "weekly"}, program=program)
    return build_job(spec, Settings.from_env(env))["spec"]["template"]


def test_a_bot_runs_where_the_bot_settings_place_it() -> None:
    pod = pod_template(Program.BOT, **BOTH)["spec"]
    assert pod["nodeSelector"] == {"vexa.ai/pool": "bots"}
    assert pod["tolerations"] == BOTS_POOL


def test_a_final_pass_runs_where_the_final_settings_place_it() -> None:
    pod = pod_template(Program.FINAL_PASS, **BOTH)["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "final"}
    assert pod["tolerations"] == GPU_POOL


@pytest.mark.parametrize("program", list(Program))
def test_without_placement_settings_a_pod_may_run_on_any_node(program: Program) -> None:
    pod = pod_template(program)["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


@pytest.mark.parametrize(
    "program, setting, value",
    [
        (Program.BOT, "BOT_NODE_SELECTOR", "pool"), (Program.BOT, "BOT_NODE_SELECTOR", "=bots"),
        (Program.BOT, "BOT_TOLERATIONS", "{}"), (Program.BOT, "BOT_TOLERATIONS", "[1]"),
        (Program.BOT, "BOT_TOLERATIONS", "no"),
        (Program.FINAL_PASS, "FINAL_NODE_SELECTOR", "pool"), (Program.FINAL_PASS, "FINAL_TOLERATIONS", "{}"),
    ],
)  # fmt: skip
def test_a_placement_setting_that_cannot_be_read_is_named(program: Program, setting: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{setting}="):
        placement(program, Settings.from_env({setting: value}))


def test_a_bot_asks_the_cluster_autoscaler_not_to_evict_it() -> None:
    """Evicted to free its node, a bot would drop out of its meeting."""
    assert pod_template(Program.BOT)["metadata"]["annotations"] == {SAFE_TO_EVICT: "false"}
