"""The provisioned Grafana dashboard and datasource fit together and cover the runbook."""

from __future__ import annotations

import pytest
from opsfiles import GRAFANA, dashboard_expressions, dashboard_panels, dashboards, load_yaml

pytest.importorskip("yaml", reason="PyYAML (dev extra) is needed to read the provisioning")

DATASOURCES = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
((_, DASHBOARD),) = dashboards()


def test_every_query_uses_the_provisioned_datasource() -> None:
    (source,) = DATASOURCES["datasources"]
    assert source["type"] == "prometheus"
    for panel in dashboard_panels(DASHBOARD):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]


def test_dashboard_covers_what_operators_need() -> None:
    rows = {p["title"].split(" (")[0] for p in DASHBOARD["panels"] if p["type"] == "row"}
    assert rows == {
        "Throughput",
        "Latency",
        "Consumer lag",
        "Dead letters and errors",
        "Index health",
        "Model",
        "Quality signals",
        "Cold start and sources",
    }
    exprs = " ".join(e for _, e in dashboard_expressions(DASHBOARD))
    for needle in (
        "histogram_quantile(0.99",
        "streamrec_consumer_lag_records",
        "streamrec_dead_letters_total",
        "streamrec_index_refresh_age_seconds",
        "streamrec_model_info",
        "streamrec_catalog_coverage_ratio",
        "streamrec_recommended_slots_total",
        'streamrec_recommended_slots_total{item="new"}',
        "streamrec_new_item_vectors_total",
        "streamrec_new_items",
    ):
        assert needle in exprs, needle


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = list(dashboard_panels(DASHBOARD))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
    assert DASHBOARD["uid"] and DASHBOARD["title"]
