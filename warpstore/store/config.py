"""Store and connector configurations (the original's ``proxystore.store.config``).

A :class:`StoreConfig` is everything needed to rebuild a store in another
process: proxies carry one, and a site can keep one in a TOML file that every
job reads (``Store.from_config(StoreConfig.from_toml(path))``). Both classes
are also read-only mappings of their fields, so code that treated the old
plain-dict config (``config["name"]``, ``{**config, "name": ...}``) keeps
working.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import pathlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from warpstore.connectors.protocols import Connector
from warpstore.store.types import DeserializerT, SerializerT

__all__ = ["ConnectorConfig", "StoreConfig"]

# Short names accepted for ``ConnectorConfig.kind`` (the original's shortcuts:
# module name, class name, class name without "Connector", all case-insensitive).
_KNOWN_CONNECTORS = (
    "warpstore.connectors.daos:DAOSConnector",
    "warpstore.connectors.endpoint:EndpointConnector",
    "warpstore.connectors.file:FileConnector",
    "warpstore.connectors.globus:GlobusConnector",
    "warpstore.connectors.local:LocalConnector",
    "warpstore.connectors.margo:MargoConnector",
    "warpstore.connectors.multi:MultiConnector",
    "warpstore.connectors.redis:RedisConnector",
    "warpstore.connectors.ucx:UCXConnector",
    "warpstore.connectors.zmq:ZMQConnector",
)


def _tomllib() -> Any:
    """tomllib (3.11+), or tomli on 3.10 (not a dependency: only reading TOML needs it)."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # pragma: no cover - 3.10
        import tomli
    except ImportError as e:  # pragma: no cover - 3.10
        raise ImportError(
            "reading TOML on Python 3.10 needs the tomli package: pip install tomli"
        ) from e
    return tomli  # pragma: no cover - 3.10


def _import_path(path: str) -> Any:
    """Import ``module:Qual.Name`` or ``package.module.Name``."""
    if ":" in path:
        module_name, _, qualname = path.partition(":")
    else:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ImportError(f"{path!r} is not an import path (module:Name or module.Name)")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ImportError(f"{module_name!r} has no {qualname!r}") from e
    return obj


def _object_path(obj: Any) -> str:
    """``module:QualName`` of an importable function or class, refusing lambdas and locals."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValueError(
            f"{obj!r} cannot be written to a config file: only importable "
            "module-level functions and classes can be named"
        )
    return f"{module}:{qualname}"


def _callable(value: Any, what: str) -> Any:
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        return _import_path(value)
    raise TypeError(f"{what} must be a callable or an import path, not {type(value).__name__}")


class _MappingMixin(Mapping[str, Any]):
    """Read-only dict view of a dataclass's fields."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def model_dump(self) -> dict[str, Any]:
        """Plain nested dicts (the original's pydantic ``model_dump``)."""
        return {
            k: v.model_dump() if isinstance(v, _MappingMixin) else v for k, v in self.items()
        }

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Any:
        """A copy with some fields replaced (the original's pydantic ``model_copy``)."""
        return dataclasses.replace(self, **dict(update or {}))  # type: ignore[type-var]

    __hash__ = None  # type: ignore[assignment]  # mutable mapping contents (dict options)


@dataclasses.dataclass(eq=True)
class ConnectorConfig(_MappingMixin):
    """Which connector, and the options it is rebuilt from.

    Attributes:
        kind: import path of the connector class (``module:Class`` or
            ``module.Class``) or a short name of a built-in one: ``"file"``,
            ``"FileConnector"``, ``"redis"``, ``"zmq"``...
        options: passed to the connector's ``from_config`` (for built-in
            connectors, the constructor's keyword arguments).
    """

    kind: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def get_connector_type(self) -> type[Connector[Any]]:
        """Import the class ``kind`` names.

        Raises:
            ValueError: ``kind`` names neither an importable class nor a built-in connector.
        """
        try:
            cls: type[Connector[Any]] = _import_path(self.kind)
            return cls
        except ImportError as e:
            wanted = self.kind.lower()
            for path in _KNOWN_CONNECTORS:
                module, _, name = path.partition(":")
                module_short = module.rsplit(".", 1)[1]
                lname = name.lower()
                if wanted in (module_short, lname, lname.replace("connector", "")):
                    found: type[Connector[Any]] = _import_path(path)
                    return found
            raise ValueError(f"unknown connector kind {self.kind!r}: {e}") from e

    def get_connector(self) -> Connector[Any]:
        """Build the connector with ``kind.from_config(options)``."""
        return self.get_connector_type().from_config(dict(self.options))


@dataclasses.dataclass(eq=True)
class StoreConfig(_MappingMixin):
    """A store's settings: see :class:`~warpstore.store.base.Store` for each one.

    ``serializer``/``deserializer`` are callables; in a TOML file they are
    written as ``module:function`` import paths (so only importable functions
    can be written there).
    """

    name: str
    connector: ConnectorConfig
    serializer: SerializerT | None = None
    deserializer: DeserializerT | None = None
    cache_size: int = 16
    metrics: bool = False
    populate_target: bool = True
    auto_register: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.connector, Mapping) and not isinstance(self.connector, ConnectorConfig):
            self.connector = ConnectorConfig(**self.connector)
        self.serializer = _callable(self.serializer, "serializer")
        self.deserializer = _callable(self.deserializer, "deserializer")

    @classmethod
    def model_validate(cls, data: Mapping[str, Any]) -> StoreConfig:
        """The original's pydantic constructor from a dict: see :meth:`from_mapping`."""
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StoreConfig:
        """Accept this class's fields, or the pre-1.0 warpstore dict
        (``connector_type``/``connector_config``/``register``).

        Raises:
            ValueError: an unknown field, naming it.
        """
        if isinstance(data, StoreConfig):
            return data
        fields = dict(data)
        if "connector_type" in fields:
            fields["connector"] = ConnectorConfig(
                kind=fields.pop("connector_type"), options=fields.pop("connector_config", {})
            )
        if "register" in fields:
            fields["auto_register"] = fields.pop("register")
        unknown = set(fields) - set(cls._field_names())
        if unknown:
            raise ValueError(f"unknown store config field(s): {', '.join(sorted(unknown))}")
        if "name" not in fields or "connector" not in fields:
            raise ValueError("a store config needs 'name' and 'connector'")
        return cls(**fields)

    @classmethod
    def from_toml(cls, filepath: str | os.PathLike[str]) -> StoreConfig:
        """Read a config written by :meth:`write_toml` (or by hand)."""
        toml = _tomllib()
        with open(filepath, "rb") as f:
            try:
                data = toml.load(f)
            except toml.TOMLDecodeError as e:
                raise ValueError(f"{os.fspath(filepath)}: not valid TOML: {e}") from e
        try:
            return cls.from_mapping(data)
        except (TypeError, ValueError, ImportError) as e:
            raise ValueError(f"{os.fspath(filepath)}: {e}") from e

    def write_toml(self, filepath: str | os.PathLike[str]) -> None:
        """Write this config as TOML (parent directories are created).

        Raises:
            ValueError: a serializer is not an importable function, or an
                option is of a type TOML cannot hold.
        """
        data = self.model_dump()
        for key in ("serializer", "deserializer"):
            data[key] = None if data[key] is None else _object_path(data[key])
        path = pathlib.Path(filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps_toml(data), encoding="utf-8")


# -- a small TOML writer: tables, strings, numbers, booleans, arrays ---------


def _toml_key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "-_" for c in key) and key.isascii()
    return key if bare else _toml_str(key)


def _toml_str(s: str) -> str:
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, os.PathLike):
        return _toml_str(os.fspath(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (
            f"{_toml_key(str(k))} = {_toml_value(v, f'{where}.{k}')}"
            for k, v in value.items()
            if v is not None
        )
        return "{" + ", ".join(items) + "}"
    raise ValueError(f"{where}: TOML cannot hold a {type(value).__name__}")


def dumps_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """Write nested mappings as TOML; ``None`` values are left out (TOML has no null)."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value, _prefix + key)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, table in tables:
        name = f"{_prefix}{_toml_key(key)}"
        out += f"\n[{name}]\n" + dumps_toml(table, name + ".")
    return out
