"""Topic contracts: decoding with reason codes, encoding, round trips (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.core.events import CatalogOp, Event, RecItem, Recommendation, rec_id_for
from streamrec.errors import BadEvent
from streamrec.io.codec import (
    DEFAULT_MAX_ID_LEN,
    decode_catalog,
    decode_event,
    encode_catalog,
    encode_event,
    encode_recommendation,
)

REASONS = {
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_value",
    "key_mismatch",
    "missing_value",
}
VALID: dict[str, Any] = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "type": "click",
    "ts": 1_700_000_000_000,
}


def _raw(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def _with(**changes: Any) -> bytes:
    obj = dict(VALID)
    obj.update(changes)
    return _raw(obj)


def _without(field: str) -> bytes:
    return _raw({k: v for k, v in VALID.items() if k != field})


def _reason(fn: Any, *args: Any, **kwargs: Any) -> BadEvent:
    with pytest.raises(BadEvent) as info:
        fn(*args, **kwargs)
    return info.value


# -- input events: valid -------------------------------------------------------------------


def test_decode_event_valid() -> None:
    event = decode_event(_raw(VALID))
    assert event == Event("e1", "u1", "i1", "click", 1_700_000_000_000)


def test_decode_event_purchase_with_matching_key_and_ts_zero() -> None:
    event = decode_event(_with(type="purchase", ts=0), key=b"u1")
    assert event.type == "purchase"
    assert event.ts == 0


def test_decode_event_ignores_extra_fields() -> None:
    assert decode_event(_with(extra={"x": [1, 2]})).event_id == "e1"


def test_decode_event_accepts_id_of_exactly_max_len() -> None:
    long_id = "x" * 10
    assert decode_event(_with(item_id=long_id), max_id_len=10).item_id == long_id


# -- input events: every reason code --------------------------------------------------------


def test_too_large_is_checked_before_parsing() -> None:
    raw = _raw(VALID)
    bad = _reason(decode_event, raw + b" " * 200, max_bytes=len(raw) + 199)
    assert bad.reason == "too_large"
    # exactly max_bytes is fine
    assert decode_event(raw, max_bytes=len(raw)).event_id == "e1"


def test_too_large_even_when_garbage() -> None:
    assert _reason(decode_event, b"\xff" * 100, max_bytes=99).reason == "too_large"


def test_not_utf8() -> None:
    assert _reason(decode_event, b'{"event_id": "\xff\xfe"}').reason == "not_utf8"


@pytest.mark.parametrize("raw", [b"", b"{", b"nope", b'{"a": 1,}', b"{'a': 1}"])
def test_not_json(raw: bytes) -> None:
    assert _reason(decode_event, raw).reason == "not_json"


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"1", b"null", b"true"])
def test_not_object(raw: bytes) -> None:
    assert _reason(decode_event, raw).reason == "not_object"


def test_missing_value() -> None:
    assert _reason(decode_event, None).reason == "missing_value"
    assert _reason(decode_catalog, None).reason == "missing_value"


@pytest.mark.parametrize("field", sorted(VALID))
def test_missing_field(field: str) -> None:
    bad = _reason(decode_event, _without(field))
    assert bad.reason == "missing_field"
    assert field in bad.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts", "1700000000000"),
        ("ts", True),
        ("ts", False),
        ("ts", 1.0),
        ("ts", 1.5),
        ("ts", None),
        ("ts", [1]),
        ("user_id", 7),
        ("event_id", None),
        ("item_id", ["i1"]),
        ("item_id", {"id": "i1"}),
        ("type", 1),
        ("user_id", True),
    ],
)
def test_wrong_type(field: str, value: Any) -> None:
    bad = _reason(decode_event, _with(**{field: value}))
    assert bad.reason == "wrong_type"
    assert field in bad.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "view"),
        ("type", "Click"),
        ("type", ""),
        ("event_id", ""),
        ("user_id", ""),
        ("item_id", ""),
        ("item_id", "x" * (DEFAULT_MAX_ID_LEN + 1)),
        ("ts", -1),
    ],
)
def test_bad_value(field: str, value: Any) -> None:
    bad = _reason(decode_event, _with(**{field: value}))
    assert bad.reason == "bad_value"
    assert field in bad.detail


def test_id_longer_than_configured_max_is_bad_value() -> None:
    assert _reason(decode_event, _with(user_id="abcd"), max_id_len=3).reason == "bad_value"


def test_key_mismatch() -> None:
    assert _reason(decode_event, _raw(VALID), key=b"u2").reason == "key_mismatch"


def test_detail_never_echoes_the_payload() -> None:
    secret = "s3cr3t-payload-marker"
    for raw in (_with(type=secret), _with(ts=secret), _raw([secret])):
        bad = _reason(decode_event, raw)
        assert secret not in str(bad)


# -- catalog --------------------------------------------------------------------------------

CATALOG: dict[str, Any] = {"item_id": "i9", "op": "upsert", "available": True, "ts": 5}


def _catalog(**changes: Any) -> bytes:
    obj = dict(CATALOG)
    obj.update(changes)
    return _raw({k: v for k, v in obj.items() if v is not ...})


def test_decode_catalog_valid_with_extra_fields() -> None:
    op = decode_catalog(_catalog(title="Lamp", price=12.5, tags=["a"]), key=b"i9")
    assert op == CatalogOp("i9", "upsert", True, 5, None)


def test_decode_catalog_available_defaults_to_true_for_upsert() -> None:
    assert decode_catalog(_catalog(available=...)).available is True


def test_decode_catalog_upsert_unavailable() -> None:
    assert decode_catalog(_catalog(available=False)).available is False


@pytest.mark.parametrize("available", [True, False, ...])
def test_delete_forces_available_false(available: Any) -> None:
    op = decode_catalog(_catalog(op="delete", available=available))
    assert op.op == "delete"
    assert op.available is False


def test_decode_catalog_vector() -> None:
    op = decode_catalog(_catalog(vector=[1, 0.5, -2]))
    assert op.vector == (1.0, 0.5, -2.0)
    assert all(isinstance(x, float) for x in op.vector)


def test_decode_catalog_null_vector_is_none() -> None:
    assert decode_catalog(_catalog(vector=None)).vector is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":[1.0,NaN]}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":[Infinity]}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":[-Infinity,1]}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":[1e999]}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":[]}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":[true]}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":["1"]}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":"1,2"}',
        b'{"item_id":"i9","op":"upsert","ts":5,"vector":{"x":1}}',
    ],
)
def test_decode_catalog_rejects_bad_vectors(raw: bytes) -> None:
    bad = _reason(decode_catalog, raw)
    assert bad.reason == "wrong_type"
    assert "vector" in bad.detail


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"op": "remove"}, "bad_value"),
        ({"op": ...}, "missing_field"),
        ({"item_id": ...}, "missing_field"),
        ({"ts": ...}, "missing_field"),
        ({"available": "yes"}, "wrong_type"),
        ({"available": 1}, "wrong_type"),
        ({"ts": -5}, "bad_value"),
        ({"ts": 5.0}, "wrong_type"),
        ({"item_id": ""}, "bad_value"),
    ],
)
def test_decode_catalog_reasons(changes: dict[str, Any], reason: str) -> None:
    assert _reason(decode_catalog, _catalog(**changes)).reason == reason


def test_decode_catalog_key_mismatch() -> None:
    assert _reason(decode_catalog, _catalog(), key=b"u1").reason == "key_mismatch"


def test_catalog_round_trip() -> None:
    op = CatalogOp("i3", "upsert", True, 9, (0.25, -1.0))
    assert decode_catalog(encode_catalog(op)) == op


# -- round trips and robustness -------------------------------------------------------------

# Lone surrogates are not encodable as UTF-8; see test_surrogate_ids_are_bad_events.
ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=DEFAULT_MAX_ID_LEN,
)
events = st.builds(
    Event,
    event_id=ids,
    user_id=ids,
    item_id=ids,
    type=st.sampled_from(["click", "purchase"]),
    ts=st.integers(min_value=0, max_value=2**53),
)


@given(events)
@settings(max_examples=150)
def test_encode_decode_round_trip(event: Event) -> None:
    raw = encode_event(event)
    assert decode_event(raw, key=event.user_id.encode("utf-8")) == event


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_arbitrary_bytes_raise_only_bad_event(raw: bytes) -> None:
    for decode in (decode_event, decode_catalog):
        try:
            decode(raw, key=b"k")
        except BadEvent as bad:
            assert bad.reason in {"not_utf8", "not_json", "not_object", "missing_field"}


json_values = st.recursive(
    # integers bounded: huge ones hit a known bug (test_huge_integer_in_vector_is_a_bad_event)
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
field_names = st.sampled_from(
    ["event_id", "user_id", "item_id", "type", "ts", "op", "available", "vector"]
)


@given(
    st.dictionaries(
        field_names, json_values | st.sampled_from(["click", "purchase", "upsert", "delete"])
    )
)
@settings(max_examples=300)
def test_arbitrary_json_objects_raise_only_bad_event(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj).encode("utf-8")
    for decode in (decode_event, decode_catalog):
        try:
            decode(raw)
        except BadEvent as bad:
            assert bad.reason in REASONS


def test_deeply_nested_json_is_a_bad_event() -> None:
    raw = b"[" * 60_000  # under the default 64 KiB cap
    assert _reason(decode_event, raw).reason == "not_json"


def test_surrogate_ids_are_bad_events() -> None:
    raw = b'{"event_id":"e\\ud800","user_id":"u","item_id":"i","type":"click","ts":1}'
    with pytest.raises(BadEvent):
        event = decode_event(raw, key=b"u")
        rec_id_for(event.event_id)  # what the pipeline does next


def test_surrogate_user_id_with_key_is_a_bad_event() -> None:
    raw = b'{"event_id":"e","user_id":"u\\ud800","item_id":"i","type":"click","ts":1}'
    _reason(decode_event, raw, key=b"u")


def test_huge_integer_in_vector_is_a_bad_event() -> None:
    raw = b'{"item_id":"i9","op":"upsert","ts":5,"vector":[1' + b"0" * 400 + b"]}"
    assert _reason(decode_catalog, raw).reason == "wrong_type"


def test_ts_beyond_int64_is_bad_value() -> None:
    assert _reason(decode_event, _with(ts=2**63)).reason == "bad_value"


# -- ids and output -------------------------------------------------------------------------


def test_rec_id_is_stable_and_distinct() -> None:
    assert rec_id_for("e1") == rec_id_for("e1")
    assert rec_id_for("e1") != rec_id_for("e2")
    assert rec_id_for("e1").startswith("rec-")


@given(st.text(min_size=1, alphabet=st.characters(blacklist_categories=("Cs",))), st.text())
def test_rec_id_differs_for_different_event_ids(a: str, b: str) -> None:
    assert (rec_id_for(a) == rec_id_for(b)) == (a == b)


def test_encode_recommendation_contract() -> None:
    rec = Recommendation(
        rec_id=rec_id_for("e1"),
        user_id="u1",
        event_id="e1",
        items=(RecItem("i2", 0.9), RecItem("i3", 0.5, propensity=0.05, explored=True)),
        model_version="v7",
        generated_at=1234,
    )
    obj = json.loads(encode_recommendation(rec))
    assert set(obj) == {"rec_id", "user_id", "event_id", "items", "model_version", "generated_at"}
    assert obj["rec_id"] == rec_id_for("e1")
    assert obj["user_id"] == "u1"
    assert obj["event_id"] == "e1"
    assert obj["items"] == [
        {"item_id": "i2", "score": 0.9, "propensity": 1.0, "explored": False},
        {"item_id": "i3", "score": 0.5, "propensity": 0.05, "explored": True},
    ]
    assert obj["model_version"] == "v7"
    assert obj["generated_at"] == 1234


def test_vector_values_beyond_float32_are_bad_vectors() -> None:
    # finite as a double, but the index stores float32, where 1e39 would become inf
    raw = b'{"item_id":"i9","op":"upsert","ts":5,"vector":[1.0,1e39]}'
    assert _reason(decode_catalog, raw).reason == "bad_vector"
    assert decode_catalog(b'{"item_id":"i9","op":"upsert","ts":5,"vector":[3.4e38]}').vector


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_score_is_never_encoded(bad: float) -> None:
    rec = Recommendation("r", "u", "e", (RecItem("i", bad),), "v", 1)
    with pytest.raises(ValueError, match="non-finite"):
        encode_recommendation(rec)
    with pytest.raises(ValueError, match="non-finite"):
        encode_recommendation(Recommendation("r", "u", "e", (RecItem("i", 1.0, bad),), "v", 1))
