"""The metric families: declared once as data, created as typed attributes, all on one scrape."""

from __future__ import annotations

import typing

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import FAMILIES, Metrics


def test_every_family_is_an_attribute_of_its_declared_kind() -> None:
    hints = typing.get_type_hints(Metrics)
    declared = {name for name, hint in hints.items() if hint in (f.kind for f in FAMILIES)}
    assert declared == {f.attr for f in FAMILIES}, "an annotation on Metrics without a row, or the reverse"
    metrics = Metrics()
    for family in FAMILIES:
        assert hints[family.attr] is family.kind
        assert type(getattr(metrics, family.attr)) is family.kind


def test_a_scrape_shows_every_family_with_its_help_and_type() -> None:
    metrics = Metrics()
    metrics.requests.labels("legacy", "api", "GET", "2xx").inc()
    body, _ = metrics.render()
    scraped = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for family in FAMILIES:
        name = family.name.removesuffix("_total")
        assert name in scraped, family.name
        assert scraped[name].documentation == family.help
        assert scraped[name].type == family.kind.__name__.lower()
    assert len({f.name for f in FAMILIES}) == len(FAMILIES) == len({f.attr for f in FAMILIES})
