"""Fixtures of the chart tests: the chart, loaded and rendered once for the whole folder.

`rendered` runs a test on the default and the production values; `with_values` also on
CUSTOM_VALUES (tests.support.chart), where every bot value differs from its default, and hands
over the complete values each was rendered from.
"""
from __future__ import annotations

from typing import Any, Iterator

import helm_python as helm
import pytest

from tests.support.chart import CHART, CUSTOM_VALUES, merged, objects, production_values, render


@pytest.fixture(scope="package")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="package")
def default_objects(chart: helm.Chart) -> list[dict[str, Any]]:
    return objects(render(chart))


@pytest.fixture(scope="package")
def production_objects(chart: helm.Chart) -> list[dict[str, Any]]:
    return objects(render(chart, production_values()))


@pytest.fixture(scope="package")
def custom_objects(chart: helm.Chart) -> list[dict[str, Any]]:
    return objects(render(chart, CUSTOM_VALUES))


@pytest.fixture(scope="package")
def renders(default_objects, production_objects, custom_objects) -> dict[str, list[dict[str, Any]]]:
    """The rendered objects by values file (as PODS names them), for tests parametrized over more than that."""
    return {"default": default_objects, "production": production_objects, "custom": custom_objects}


@pytest.fixture(params=["default", "production"])
def rendered(request, renders) -> list[dict[str, Any]]:
    return renders[request.param]


@pytest.fixture(params=["default", "production", "custom"])
def with_values(
    request, chart, default_objects, production_objects, custom_objects
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rendered objects together with the complete values they were rendered from."""
    if request.param == "default":
        return default_objects, chart.values
    if request.param == "production":
        return production_objects, merged(chart.values, production_values())
    return custom_objects, merged(chart.values, CUSTOM_VALUES)
