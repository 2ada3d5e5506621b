"""StoreConfig/ConnectorConfig (warpstore.store.config): a store rebuilt from a
config object, from its dict form, and from a TOML file, as the original allows."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

from warpstore.connectors.file import FileConnector
from warpstore.connectors.local import LocalConnector
from warpstore.connectors.redis import RedisConnector
from warpstore.store import Store, get_store, unregister_store
from warpstore.store.config import ConnectorConfig, StoreConfig, dumps_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def shout(obj: Any) -> bytes:
    return str(obj).upper().encode()


def unshout(data: Any) -> str:
    return bytes(data).decode()


def test_config_is_a_store_config_and_a_mapping(tmp_path: Path) -> None:
    with Store("cfg-obj", FileConnector(tmp_path / "d"), cache_size=3, metrics=True) as store:
        config = store.config()
        assert isinstance(config, StoreConfig)
        assert config["name"] == config.name == "cfg-obj"
        assert config.connector.kind == "warpstore.connectors.file:FileConnector"
        assert config.connector.options["store_dir"] == str(tmp_path / "d")
        assert pickle.loads(pickle.dumps(config)) == config
        key = store.put("v")
        other = Store.from_config(config.model_dump() | {"name": "cfg-obj-2"})
        assert other.get(key) == "v" and other.cache.maxsize == 3 and other.metrics


def test_toml_round_trip_with_serializers(tmp_path: Path) -> None:
    config = StoreConfig(
        name="cfg-toml",
        connector=ConnectorConfig(kind="file", options={"store_dir": str(tmp_path / "s")}),
        serializer=shout,
        deserializer=unshout,
        cache_size=0,
        populate_target=False,
    )
    path = tmp_path / "sub" / "store.toml"
    config.write_toml(path)
    text = path.read_text()
    data = tomllib.loads(text)
    assert data["connector"] == {"kind": "file", "options": {"store_dir": str(tmp_path / "s")}}
    assert data["serializer"] == f"{__name__}:shout"
    assert "deserializer" in data and data["cache_size"] == 0
    loaded = StoreConfig.from_toml(path)
    assert loaded == config
    with Store.from_config(loaded) as store:
        assert isinstance(store.connector, FileConnector)
        assert store.get(store.put("abc")) == "ABC"
        assert store.proxy("xyz") == "XYZ"  # populate_target=False: deserialized


def test_auto_register_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('name = "cfg-reg"\nauto_register = true\n[connector]\nkind = "local"\n')
    store = Store.from_config(StoreConfig.from_toml(path))
    try:
        assert get_store("cfg-reg") is store
        assert isinstance(store.connector, LocalConnector)
    finally:
        store.close()
    assert get_store("cfg-reg") is None


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("redis", RedisConnector),
        ("RedisConnector", RedisConnector),
        ("warpstore.connectors.redis.RedisConnector", RedisConnector),
        ("warpstore.connectors.file:FileConnector", FileConnector),
        ("zmq", None),
    ],
)
def test_connector_kind_names(kind: str, cls: type | None) -> None:
    found = ConnectorConfig(kind=kind).get_connector_type()
    if cls is not None:
        assert found is cls
    else:
        assert found.__name__ == "ZMQConnector"


def test_bad_configs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown connector kind 'nosuch'"):
        ConnectorConfig(kind="nosuch").get_connector()
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [\n")
    with pytest.raises(ValueError, match=r"bad\.toml: not valid TOML"):
        StoreConfig.from_toml(bad)
    extra = tmp_path / "extra.toml"
    extra.write_text('name = "x"\ncolour = "red"\n[connector]\nkind = "local"\n')
    with pytest.raises(ValueError, match=r"extra\.toml: unknown store config field.*colour"):
        StoreConfig.from_toml(extra)
    config = StoreConfig(name="l", connector=ConnectorConfig(kind="local"),
                         serializer=lambda o: b"")
    with pytest.raises(ValueError, match="cannot be written"):
        config.write_toml(tmp_path / "lambda.toml")


def test_toml_writer_quotes_and_nests() -> None:
    text = dumps_toml(
        {"a": 'q"uote\\\n', "b": [1, 2.5, True], "none": None,
         "t": {"x y": 1, "in": {"deep": "z"}}, "inline": [{"k": "v"}]}
    )
    assert tomllib.loads(text) == {
        "a": 'q"uote\\\n', "b": [1, 2.5, True], "t": {"x y": 1, "in": {"deep": "z"}},
        "inline": [{"k": "v"}],
    }


def test_legacy_dict_config_still_builds(tmp_path: Path) -> None:
    legacy = {
        "name": "cfg-legacy",
        "connector_type": "warpstore.connectors.local:LocalConnector",
        "connector_config": {},
        "serializer": None,
        "deserializer": None,
        "cache_size": 4,
        "metrics": False,
        "populate_target": True,
        "register": False,
    }
    store = Store.from_config(legacy)
    assert store.cache.maxsize == 4
    store.close()
    unregister_store("cfg-legacy")


def test_pydantic_style_helpers() -> None:
    config = StoreConfig.model_validate({"name": "m", "connector": {"kind": "local"}})
    assert isinstance(config.connector, ConnectorConfig)
    renamed = config.model_copy(update={"name": "n"})
    assert renamed.name == "n" and config.name == "m" and renamed.connector == config.connector
    with pytest.raises(ValueError, match="unknown store config field"):
        StoreConfig.model_validate({"name": "m", "connector": {"kind": "local"}, "x": 1})
