"""Every PromQL expression of the alert rules and the dashboard names only exported metrics."""

from __future__ import annotations

import pytest
from opsfiles import (
    PROMETHEUS_SERIES,
    ROOT,
    dashboard_expressions,
    dashboards,
    exported_series_names,
    promql_metric_names,
    rule_expressions,
)

from streamrec.ops.metrics import Metrics

pytest.importorskip("yaml", reason="PyYAML (dev extra) is needed to read the rule files")

EXPORTED = exported_series_names(Metrics()) | PROMETHEUS_SERIES


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="streamrec"} == 0 or absent(up{job="streamrec"})', {"up"}),
        (
            "histogram_quantile(0.99, sum by (le, stage) (rate(a_seconds_bucket[5m]))) > 1e-9",
            {"a_seconds_bucket"},
        ),
        (
            "sum(rate(x_total[$__rate_interval])) / clamp_min(sum(rate(y_total[5m])), 1)",
            {"x_total", "y_total"},
        ),
        ('label_replace(m, "dst", "$1", "src", "(.*)") offset 5m', {"m"}),
        (
            "deriv(sum(lag)[10m:30s]) > 0 and on (instance) group_left (version) info_metric",
            {"lag", "info_metric"},
        ),
        ('count by (version) (streamrec_model_info{version=~"v.*"})', {"streamrec_model_info"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_exported_names_map_families_to_series() -> None:
    assert {
        "streamrec_events_consumed_total",
        "streamrec_stage_duration_seconds_bucket",
        "streamrec_stage_duration_seconds_count",
        "streamrec_model_info",
        "streamrec_consumer_lag_records",
        "streamrec_catalog_coverage_ratio",
    } <= EXPORTED
    # a counter's family name without _total is not a series
    assert "streamrec_events_consumed" not in EXPORTED


def test_a_typo_would_be_caught() -> None:
    unknown = promql_metric_names("rate(streamrec_recomendations_published_total[5m])") - EXPORTED
    assert unknown == {"streamrec_recomendations_published_total"}


def test_alert_rules_name_only_exported_metrics() -> None:
    rules = list(rule_expressions())
    assert len(rules) >= 6
    for name, expr in rules:
        unknown = promql_metric_names(expr) - EXPORTED
        assert not unknown, f"rule {name} uses metrics the worker does not export: {unknown}"


def test_dashboard_queries_name_only_exported_metrics() -> None:
    found = dashboards()
    assert found, "no dashboard in deploy/grafana/dashboards"
    for path, dashboard in found:
        exprs = list(dashboard_expressions(dashboard))
        assert len(exprs) >= 10, f"{path.name} has almost no queries"
        for title, expr in exprs:
            names = promql_metric_names(expr)
            assert names, f"{path.name} panel {title!r} selects no metric: {expr}"
            unknown = names - EXPORTED
            assert not unknown, f"{path.name} panel {title!r} uses unknown metrics: {unknown}"


def test_the_required_alerts_exist() -> None:
    alerts = {name for name, _ in rule_expressions()}
    assert {
        "StreamrecWorkerDown",
        "StreamrecConsumerLagGrowing",
        "StreamrecDeadLetterSpike",
        "StreamrecLatencyHigh",
        "StreamrecIndexStale",
        "StreamrecNoRecommendations",
    } <= alerts


def test_every_alert_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _ in rule_expressions() if f"`{name}`" not in readme]
    assert not missing, f"alerts not documented in README.md: {missing}"
