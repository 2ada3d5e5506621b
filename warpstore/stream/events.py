"""Events, and how they travel: JSON, never pickle.

The producer publishes an :class:`EventBatch` per flush: new-object events
(the object itself, for topics without a store), new-object-key events (the
key and the config of the store holding the object) and end-of-stream events.
Messages come from a broker that other programs can write to, so decoding is
strict: the bytes are JSON, each field is checked, keys are rebuilt only as
``NamedTuple`` classes of trusted modules, and store configs only name
connectors and (de)serializers from trusted modules (a config naming
``os:system`` as its deserializer would otherwise run it on the data).
Objects sent inline (no store for the topic) must therefore be JSON values or
bytes; anything else needs a store.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
from collections.abc import Mapping
from typing import Any, Union

from warpstore.stream.exceptions import EventDecodeError, EventEncodeError

__all__ = [
    "TRUSTED_MODULE_PREFIXES",
    "EndOfStreamEvent",
    "Event",
    "EventBatch",
    "NewObjectEvent",
    "NewObjectKeyEvent",
    "bytes_to_event",
    "event_to_bytes",
    "store_config_to_wire",
]

TRUSTED_MODULE_PREFIXES: list[str] = ["warpstore."]
"""Modules whose key classes, connectors and (de)serializers an event may name.

Append a prefix (e.g. ``"mylab.connectors."``) to stream keys of a connector
of your own; the list is process-wide, read at decode time.
"""

_VERSION = 1


@dataclasses.dataclass
class EndOfStreamEvent:
    """No more objects will be sent to ``topic`` by this producer."""

    topic: str


@dataclasses.dataclass
class NewObjectEvent:
    """An object carried inside the event (its topic has no store)."""

    topic: str
    obj: Any
    metadata: dict[str, Any]


@dataclasses.dataclass
class NewObjectKeyEvent:
    """An object in a store: its key and the config to rebuild that store.

    ``store_config`` is a :class:`~warpstore.store.config.StoreConfig` when
    made by a producer, its plain (wire) form when decoded from a message.
    """

    topic: str
    key: Any
    evict: bool
    metadata: dict[str, Any]
    store_config: Mapping[str, Any]

    @classmethod
    def from_key(
        cls,
        key: Any,
        *,
        evict: bool,
        metadata: dict[str, Any],
        store_config: Mapping[str, Any],
        topic: str,
    ) -> NewObjectKeyEvent:
        return cls(topic, key, evict, metadata, store_config)

    def get_key(self) -> Any:
        return self.key


@dataclasses.dataclass
class EventBatch:
    """The events of one flush of one topic, in order."""

    topic: str
    events: list[Event]


Event = Union[EndOfStreamEvent, NewObjectEvent, NewObjectKeyEvent]  # noqa: UP007 (runtime alias, py3.10)


# -- values -------------------------------------------------------------------


def _encode_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (list, tuple)):
        return [_encode_value(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise EventEncodeError(f"{where}: dict keys must be strings to travel in an event")
        if any(k.startswith("$") for k in value):
            return {"$d": [[k, _encode_value(v, where)] for k, v in value.items()]}
        return {k: _encode_value(v, where) for k, v in value.items()}
    raise EventEncodeError(
        f"{where}: a {type(value).__name__} cannot travel inside an event (only JSON values "
        "and bytes can): map the topic to a Store so the event carries a key instead"
    )


def _decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$b"} and isinstance(value["$b"], str):
            try:
                return base64.b64decode(value["$b"], validate=True)
            except ValueError as e:
                raise EventDecodeError(f"bad base64 in event: {e}") from None
        if set(value) == {"$d"} and isinstance(value["$d"], list):
            out: dict[str, Any] = {}
            for item in value["$d"]:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                    raise EventDecodeError("bad escaped dict in event")
                out[item[0]] = _decode_value(item[1])
            return out
        return {k: _decode_value(v) for k, v in value.items()}
    return value


# -- keys ----------------------------------------------------------------------


def _trusted(path: Any) -> bool:
    return isinstance(path, str) and any(path.startswith(p) for p in TRUSTED_MODULE_PREFIXES)


def _encode_key(key: Any) -> Any:
    if isinstance(key, tuple) and hasattr(key, "_fields"):
        cls = type(key)
        return {"$nt": f"{cls.__module__}:{cls.__qualname__}", "f": [_encode_key(f) for f in key]}
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    if isinstance(key, (list, tuple)):
        return [_encode_key(k) for k in key]
    raise EventEncodeError(f"key {key!r} of type {type(key).__name__} cannot travel in an event")


def _import_path(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise EventDecodeError(f"event names {path!r}, which cannot be imported here: {e}") from e
    return obj


def _decode_key(raw: Any) -> Any:
    if isinstance(raw, dict):
        path = raw.get("$nt")
        fields = raw.get("f")
        if not isinstance(path, str) or not isinstance(fields, list) or ":" not in path:
            raise EventDecodeError("malformed key in event")
        if not _trusted(path):
            raise EventDecodeError(
                f"event key type {path!r} is not from a trusted module "
                f"({', '.join(TRUSTED_MODULE_PREFIXES)}); refusing it"
            )
        cls = _import_path(path)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            raise EventDecodeError(f"event key type {path!r} is not a NamedTuple")
        try:
            return cls(*(_decode_key(f) for f in fields))
        except TypeError as e:
            raise EventDecodeError(f"event key does not fit {path}: {e}") from None
    if isinstance(raw, list):
        return tuple(_decode_key(k) for k in raw)
    if raw is None or isinstance(raw, (bool, int, float, str)):
        return raw
    raise EventDecodeError("malformed key in event")


def _callable_path(fn: Any) -> str | None:
    if fn is None or isinstance(fn, str):
        return fn
    return f"{fn.__module__}:{fn.__qualname__}"


def store_config_to_wire(config: Any) -> dict[str, Any]:
    """A store's config as plain JSON-able data: (de)serializers by import path."""
    connector = config["connector"]
    return {
        "name": config["name"],
        "connector": {"kind": connector["kind"], "options": dict(connector["options"])},
        "serializer": _callable_path(config["serializer"]),
        "deserializer": _callable_path(config["deserializer"]),
        "cache_size": config["cache_size"],
        "metrics": config["metrics"],
        "populate_target": config["populate_target"],
    }


_WIRE_FIELDS = {
    "name",
    "connector",
    "serializer",
    "deserializer",
    "cache_size",
    "metrics",
    "populate_target",
}


def _check_store_config(config: Any) -> dict[str, Any]:
    """Refuse configs that would import or call anything outside trusted modules."""
    if not isinstance(config, dict) or not set(config) <= _WIRE_FIELDS:
        raise EventDecodeError("event store_config is not a store config")
    if not isinstance(config.get("name"), str) or not config["name"]:
        raise EventDecodeError("event store_config has no store name")
    connector = config.get("connector")
    if not isinstance(connector, dict) or not isinstance(connector.get("options"), dict):
        raise EventDecodeError("event store_config has no connector options")
    kind = connector.get("kind")
    if not (isinstance(kind, str) and _trusted(kind) and ":" in kind):
        raise EventDecodeError(
            f"event names connector {kind!r}, not a class from a trusted module "
            f"({', '.join(TRUSTED_MODULE_PREFIXES)}); refusing it"
        )
    for field in ("serializer", "deserializer"):
        value = config.get(field)
        if value is not None and not _trusted(value):
            raise EventDecodeError(
                f"event names {field} {value!r}, not from a trusted module; refusing it"
            )
    for field, kind_ in (("cache_size", int), ("metrics", bool), ("populate_target", bool)):
        if field in config and not isinstance(config[field], kind_):
            raise EventDecodeError(f"event store_config field {field!r} has the wrong type")
    return config


# -- events ---------------------------------------------------------------------


def _event_to_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, EndOfStreamEvent):
        return {"type": "end_of_stream", "topic": event.topic}
    if isinstance(event, NewObjectEvent):
        return {
            "type": "new_object",
            "topic": event.topic,
            "obj": _encode_value(event.obj, f"object sent to topic {event.topic!r}"),
            "metadata": _encode_value(event.metadata, f"metadata for topic {event.topic!r}"),
        }
    if isinstance(event, NewObjectKeyEvent):
        return {
            "type": "new_object_key",
            "topic": event.topic,
            "key": _encode_key(event.key),
            "evict": bool(event.evict),
            "metadata": _encode_value(event.metadata, f"metadata for topic {event.topic!r}"),
            "store_config": _encode_value(store_config_to_wire(event.store_config), "store config"),
        }
    raise EventEncodeError(f"not an event: {event!r}")


def event_to_bytes(event: EventBatch | Event) -> bytes:
    """The message for ``event`` (a batch, or a single event sent as a batch of one)."""
    batch = event if isinstance(event, EventBatch) else EventBatch(event.topic, [event])
    doc = {
        "v": _VERSION,
        "topic": batch.topic,
        "events": [_event_to_dict(e) for e in batch.events],
    }
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as e:
        raise EventEncodeError(f"event for topic {batch.topic!r} is not valid JSON: {e}") from e


def _str_field(d: dict[str, Any], name: str) -> str:
    value = d.get(name)
    if not isinstance(value, str):
        raise EventDecodeError(f"event field {name!r} is missing or not a string")
    return value


def _dict_to_event(d: Any) -> Event:
    if not isinstance(d, dict):
        raise EventDecodeError("event is not an object")
    kind = d.get("type")
    topic = _str_field(d, "topic")
    if kind == "end_of_stream":
        return EndOfStreamEvent(topic)
    metadata = _decode_value(d.get("metadata", {}))
    if not isinstance(metadata, dict):
        raise EventDecodeError("event metadata is not an object")
    if kind == "new_object":
        return NewObjectEvent(topic, _decode_value(d.get("obj")), metadata)
    if kind == "new_object_key":
        if not isinstance(d.get("evict"), bool):
            raise EventDecodeError("event field 'evict' is not a boolean")
        config = _check_store_config(_decode_value(d.get("store_config")))
        return NewObjectKeyEvent(topic, _decode_key(d.get("key")), d["evict"], metadata, config)
    raise EventDecodeError(f"unknown event type {kind!r}")


def bytes_to_event(message: bytes | bytearray | memoryview) -> EventBatch:
    """Parse and check a message; raises :class:`EventDecodeError` for anything malformed."""
    try:
        doc = json.loads(bytes(message))
    except (ValueError, UnicodeDecodeError) as e:
        raise EventDecodeError(f"message is not a JSON event ({len(message)} bytes): {e}") from None
    if not isinstance(doc, dict) or doc.get("v") != _VERSION:
        raise EventDecodeError(f"message is not a version-{_VERSION} event batch")
    events = doc.get("events")
    if not isinstance(events, list):
        raise EventDecodeError("event batch has no list of events")
    return EventBatch(_str_field(doc, "topic"), [_dict_to_event(e) for e in events])
