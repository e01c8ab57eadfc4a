"""Topic contracts: decoding with validation, encoding, dead-letter headers (pure).

Input ``streamrec.events`` (key = user_id)::

    {"event_id": str, "user_id": str, "item_id": str, "type": "click"|"purchase", "ts": int}
    {"event_id": str, "user_id": str, "item_id": str, "type": "impression", "ts": int,
     "rec_id": str}                          # one record per shown item
    {"event_id": str, "user_id": str, "item_id": str, "type": "dismiss", "ts": int,
     "rec_id": str (optional)}

Catalog ``streamrec.items`` (key = item_id; extra fields allowed, ``vector`` is used)::

    {"item_id": str, "op": "upsert"|"delete", "available": bool, "ts": int}

Output ``streamrec.recommendations`` (key = user_id)::

    {"rec_id": str, "user_id": str, "event_id": str,
     "items": [{"item_id": str, "score": float, "propensity": float, "explored": bool,
                "source": str, "anchor": str (covisit only)}],
     "model_version": str, "generated_at": int, "arm": str (only in an A/B test)}

JSON is read and written with orjson (several times faster than the stdlib on these small
objects); input that orjson refuses is classified by the stdlib parser, so the reason codes
stay those below. Decoding never logs or echoes the payload: a ``BadEvent`` carries a bounded
reason code (``too_large``, ``not_utf8``, ``not_json``, ``not_object``, ``missing_field``,
``wrong_type``, ``bad_value``, ``key_mismatch``) and a detail naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streamrec.core.events import (
    CATALOG_OPS,
    EVENT_TYPES,
    CatalogOp,
    Event,
    RecItem,
    Recommendation,
)
from streamrec.errors import BadEvent

DEFAULT_MAX_BYTES = 65536
DEFAULT_MAX_ID_LEN = 256
FLOAT32_MAX = 3.4028234663852886e38
MAX_TS_MS = 2**53  # exact in JSON doubles, and far beyond any real clock


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise BadEvent("too_large", f"{len(raw)} bytes > max {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = _load_strict_reasons(raw)  # rare: bad input, classified as the stdlib would
    if isinstance(obj, dict) and isinstance(obj.get("ts"), float):
        obj = _load_strict_reasons(raw)  # orjson reads integers past 64 bits as floats
    if not isinstance(obj, dict):
        raise BadEvent("not_object", f"JSON value is a {type(obj).__name__}, not an object")
    return obj


def _load_strict_reasons(raw: bytes) -> Any:
    """The stdlib parser, for what orjson refuses: its reason codes are the contract's.

    It accepts what is not JSON (``NaN``, ``Infinity``, lone surrogate escapes), which the field
    checks then reject with a precise reason (``wrong_type``, ``bad_value``).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent("not_utf8", "value is not UTF-8") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadEvent("not_json", "value is not JSON (or nested too deeply)") from None


def _get_id(obj: Mapping[str, Any], name: str, max_len: int) -> str:
    if name not in obj:
        raise BadEvent("missing_field", name)
    value = obj[name]
    if not isinstance(value, str):
        raise BadEvent("wrong_type", f"{name} must be a string")
    if not value or len(value) > max_len:
        raise BadEvent("bad_value", f"{name} must have 1..{max_len} characters")
    if "\x00" in value:
        raise BadEvent("bad_value", f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadEvent("bad_value", f"{name} is not valid Unicode (lone surrogate)") from None
    return value


def _get_ts(obj: Mapping[str, Any]) -> int:
    if "ts" not in obj:
        raise BadEvent("missing_field", "ts")
    value = obj["ts"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadEvent("wrong_type", "ts must be an integer (epoch ms)")
    if not 0 <= value <= MAX_TS_MS:
        raise BadEvent("bad_value", f"ts must be in 0..{MAX_TS_MS} (epoch ms)")
    return value


def _get_choice(obj: Mapping[str, Any], name: str, choices: Sequence[str]) -> str:
    if name not in obj:
        raise BadEvent("missing_field", name)
    value = obj[name]
    if not isinstance(value, str):
        raise BadEvent("wrong_type", f"{name} must be a string")
    if value not in choices:
        raise BadEvent("bad_value", f"{name} must be one of {', '.join(choices)}")
    return value


def _check_key(key: bytes | None, expected: str, field: str) -> None:
    if key is not None and key != expected.encode("utf-8"):
        raise BadEvent("key_mismatch", f"record key differs from {field}")


def decode_event(
    raw: bytes | None,
    key: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_id_len: int = DEFAULT_MAX_ID_LEN,
) -> Event:
    """Decode and validate one input event.

    Args:
        raw: the record value.
        key: the record key; when present it must equal the user_id.
        max_bytes: larger values are rejected before parsing.
        max_id_len: longest accepted id.

    Raises:
        BadEvent: the record breaks the contract.
    """
    if raw is None:
        raise BadEvent("missing_value", "record has no value")
    obj = _load_object(raw, max_bytes)
    user_id = _get_id(obj, "user_id", max_id_len)
    event_id = _get_id(obj, "event_id", max_id_len)
    item_id = _get_id(obj, "item_id", max_id_len)
    type_ = _get_choice(obj, "type", EVENT_TYPES)
    event = Event(
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        type=type_,  # type: ignore[arg-type]
        ts=_get_ts(obj),
        rec_id=_get_rec_id(obj, type_, max_id_len),
    )
    _check_key(key, user_id, "user_id")
    return event


def _get_rec_id(obj: Mapping[str, Any], type_: str, max_id_len: int) -> str | None:
    """The list an impression or a dismissal came from: required for an impression, optional
    (absent or null) for a dismissal; never read for clicks and purchases, so a producer that
    already sends something there keeps working."""
    if type_ == "impression" or (type_ == "dismiss" and obj.get("rec_id") is not None):
        return _get_id(obj, "rec_id", max_id_len)
    return None


def _get_vector(obj: Mapping[str, Any]) -> tuple[float, ...] | None:
    value = obj.get("vector")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise BadEvent("wrong_type", "vector must be a non-empty list of numbers")
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise BadEvent("wrong_type", "vector must hold finite numbers")
        try:
            number = float(x)
        except OverflowError:
            raise BadEvent("wrong_type", "vector must hold finite numbers") from None
        if not math.isfinite(number):
            raise BadEvent("wrong_type", "vector must hold finite numbers")
        if abs(number) > FLOAT32_MAX:  # the index stores float32: it would become inf
            raise BadEvent("bad_vector", "vector values must fit in float32 (|x| <= 3.4e38)")
        out.append(number)
    return tuple(out)


def decode_catalog(
    raw: bytes | None,
    key: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_id_len: int = DEFAULT_MAX_ID_LEN,
) -> CatalogOp:
    """Decode and validate one catalog record (extra fields are allowed and ignored).

    Raises:
        BadEvent: the record breaks the contract.
    """
    if raw is None:
        raise BadEvent("missing_value", "record has no value")
    obj = _load_object(raw, max_bytes)
    item_id = _get_id(obj, "item_id", max_id_len)
    op = _get_choice(obj, "op", CATALOG_OPS)
    available = obj.get("available", op == "upsert")
    if not isinstance(available, bool):
        raise BadEvent("wrong_type", "available must be a boolean")
    result = CatalogOp(
        item_id=item_id,
        op=op,  # type: ignore[arg-type]
        available=available and op == "upsert",
        ts=_get_ts(obj),
        vector=_get_vector(obj),
    )
    _check_key(key, item_id, "item_id")
    return result


def encode_event(event: Event) -> bytes:
    """Serialize an input event (used by the simulator and tests)."""
    obj: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.type,
        "ts": event.ts,
    }
    if event.rec_id is not None:
        obj["rec_id"] = event.rec_id
    return orjson.dumps(obj)


def encode_catalog(op: CatalogOp) -> bytes:
    """Serialize a catalog record."""
    obj: dict[str, Any] = {
        "item_id": op.item_id,
        "op": op.op,
        "available": op.available,
        "ts": op.ts,
    }
    if op.vector is not None:
        obj["vector"] = list(op.vector)
    return orjson.dumps(obj)


def encode_recommendation(rec: Recommendation) -> bytes:
    """Serialize a recommendation for the output topic.

    Raises:
        ValueError: a score or propensity is not finite (NaN or infinite): no JSON parser in
            other languages accepts those, so such a list is never published.
    """
    for it in rec.items:
        if not (math.isfinite(it.score) and math.isfinite(it.propensity)):
            raise ValueError(f"non-finite score or propensity for item slot of {rec.rec_id}")
    obj: dict[str, Any] = {
        "rec_id": rec.rec_id,
        "user_id": rec.user_id,
        "event_id": rec.event_id,
        "items": [_encode_item(it) for it in rec.items],
        "model_version": rec.model_version,
        "generated_at": rec.generated_at,
    }
    if rec.arm is not None:
        obj["arm"] = rec.arm
    return orjson.dumps(obj)


def _encode_item(it: RecItem) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "item_id": it.item_id,
        "score": it.score,
        "propensity": it.propensity,
        "explored": it.explored,
    }
    if it.source is not None:
        obj["source"] = it.source
    if it.anchor is not None:
        obj["anchor"] = it.anchor
    return obj


HEADER_ERROR = "x-streamrec-error"
HEADER_DETAIL = "x-streamrec-error-detail"
HEADER_TOPIC = "x-source-topic"
HEADER_PARTITION = "x-source-partition"
HEADER_OFFSET = "x-source-offset"


def dead_letter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int
) -> tuple[tuple[str, bytes], ...]:
    """Headers of a dead-letter record: why it failed and where it came from."""
    return (
        (HEADER_ERROR, reason.encode()),
        (HEADER_DETAIL, detail[:200].encode()),
        (HEADER_TOPIC, topic.encode()),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
    )
