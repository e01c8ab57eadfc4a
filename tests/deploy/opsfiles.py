"""Helpers for the deployment tests: file locations, PromQL metric names, the exported names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamrec.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"

# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_FUNCTIONS = """
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
deg delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count
histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
holt_winters hour idelta increase info irate label_join label_replace last_over_time ln log10
log2 mad_over_time max_over_time min_over_time minute month pi predict_linear
present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time
timestamp vector year
"""
_AGGREGATIONS = "avg bottomk count count_values group limitk limit_ratio max min quantile stddev"
_AGGREGATIONS += " stdvar sum topk"
_KEYWORDS = "and or unless bool offset by without on ignoring group_left group_right start end"
_KEYWORDS += " inf nan Inf NaN"
PROMQL_WORDS = set((_FUNCTIONS + " " + _AGGREGATIONS + " " + _KEYWORDS).split())

_STRING = re.compile(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`[^`]*`")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
# an identifier not glued to a number before it (5m, 1e-9 are not names)
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][\w:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers minus PromQL words and label names."""
    text = _GRAFANA_VARIABLE.sub(" ", expr)
    text = _STRING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in PROMQL_WORDS}


def exported_series_names(metrics: Metrics) -> set[str]:
    """Every series name the registry can export (``_total``, ``_bucket``, ``_info``, ...)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
        "gauge": ("",),
    }
    names = set()
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def load_yaml(path: Path) -> Any:
    """Parse a YAML file (PyYAML is a dev dependency)."""
    import yaml

    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    """Every document of a multi-document YAML file."""
    import yaml

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def rule_expressions() -> Iterator[tuple[str, str]]:
    """(rule name, expr) of every alerting and recording rule in deploy/prometheus/rules."""
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                yield rule.get("alert") or rule["record"], rule["expr"]


def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    """Every provisioned dashboard JSON."""
    return [(p, json.loads(p.read_text())) for p in sorted((GRAFANA / "dashboards").glob("*.json"))]


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Panels, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query of a dashboard."""
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
