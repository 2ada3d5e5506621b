"""GlobusConnector and `warpstore globus login/logout`, through the adapter double.

Globus's services are not reachable here: the connector and the CLI run their
real code on ``tests/globus_double.py``, a double of the one module that calls
globus-sdk. "Sites" are two directories registered as two collections; which
site a process is on comes from its host name, as on real machines.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import warpstore.connectors.globus as globus_module
import warpstore.connectors.globus_adapter as adapter
from tests import globus_double
from warpstore.cli import cli
from warpstore.connectors.globus import GlobusConnector
from warpstore.exceptions import ConnectorConnectionError, ConnectorError


@pytest.fixture
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(adapter, "ADAPTER_FACTORY", globus_double.GlobusDouble)
    globus_double.reset()
    monkeypatch.setattr(globus_double, "delay", 0.1)
    for name in ("a", "b"):
        globus_double.register_collection(f"coll-{name}", f"/~/{name}", tmp_path / name)
    endpoints = [
        {"uuid": "coll-a", "endpoint_path": "/~/a", "local_path": str(tmp_path / "a"),
         "host_pattern": "^a-host$"},
        {"uuid": "coll-b", "endpoint_path": "/~/b", "local_path": str(tmp_path / "b"),
         "host_pattern": ["^b-host$", "^b-login"]},
    ]
    host = {"name": "a-host"}
    monkeypatch.setattr(globus_module.socket, "gethostname", lambda: host["name"])
    yield {"endpoints": endpoints, "host": host, "dir": tmp_path}
    globus_double.reset()


def test_put_on_one_site_get_on_the_other(sites: dict[str, Any]) -> None:
    a = GlobusConnector(sites["endpoints"], polling_interval=0.02, timeout=10)
    key = a.put(b"simulation output")
    assert (sites["dir"] / "a" / key.filename).read_bytes() == b"simulation output"
    assert len(key.task_ids) == 1
    sites["host"]["name"] = "b-login2"  # the same config, used on site B
    b = GlobusConnector.from_config(a.config())
    assert b.exists(key)  # on its way, or there
    assert bytes(b.get(key)) == b"simulation output"  # waits for the transfer
    sites["host"]["name"] = "a-host"
    a.evict(key)
    assert not (sites["dir"] / "a" / key.filename).exists()
    assert not (sites["dir"] / "b" / key.filename).exists()
    sites["host"]["name"] = "b-host"
    assert b.get(key) is None and not b.exists(key)


def test_batch_is_one_transfer_per_other_site(sites: dict[str, Any]) -> None:
    a = GlobusConnector(sites["endpoints"], polling_interval=0.02, timeout=10)
    keys = a.put_batch([b"1", b"22", b"333"])
    assert len({k.task_ids for k in keys}) == 1
    sites["host"]["name"] = "b-host"
    assert [bytes(x) for x in a.get_batch(keys)] == [b"1", b"22", b"333"]


def test_failed_transfer_names_task_and_reason(sites: dict[str, Any]) -> None:
    a = GlobusConnector(sites["endpoints"], polling_interval=0.02, timeout=10)
    key = a.put(b"gone before the transfer")
    (sites["dir"] / "a" / key.filename).unlink()  # before the 0.1 s transfer runs
    sites["host"]["name"] = "b-host"
    with pytest.raises(ConnectorError) as info:
        a.get(key)
    assert key.task_ids[0] in str(info.value) and "FILE_NOT_FOUND" in str(info.value)


def test_slow_transfer_times_out_clearly(
    sites: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(globus_double, "delay", 5.0)
    a = GlobusConnector(sites["endpoints"], polling_interval=0.02, timeout=0.3)
    key = a.put(b"x")
    sites["host"]["name"] = "b-host"
    start = time.monotonic()
    with pytest.raises(ConnectorConnectionError, match=r"not done after 0\.3 s"):
        a.get(key)
    assert time.monotonic() - start < 3


def test_unknown_host_and_too_few_endpoints(sites: dict[str, Any]) -> None:
    a = GlobusConnector(sites["endpoints"])
    sites["host"]["name"] = "elsewhere"
    with pytest.raises(ConnectorError, match="matches no Globus endpoint"):
        a.put(b"x")
    with pytest.raises(ValueError, match="at least two"):
        GlobusConnector(sites["endpoints"][:1])


def test_clear_on_close_deletes_everywhere(sites: dict[str, Any]) -> None:
    a = GlobusConnector(sites["endpoints"], polling_interval=0.02, timeout=10, clear=True)
    key = a.put(b"temporary")
    time.sleep(0.3)
    assert (sites["dir"] / "b" / key.filename).exists()
    a.close()
    assert not any((sites["dir"] / s / key.filename).exists() for s in ("a", "b"))


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(adapter, "ADAPTER_FACTORY", globus_double.GlobusDouble)
    path = tmp_path / "state" / "globus-tokens.json"
    monkeypatch.setenv("WARPSTORE_GLOBUS_TOKENS", str(path))
    globus_double.reset()
    return path


def test_login_stores_tokens_0600_and_logout_revokes(tokens: Path) -> None:
    result = CliRunner().invoke(
        cli, ["globus", "login", "--client-id", "my-app"], input="good-code\n"
    )
    assert result.exit_code == 0, result.output
    assert "https://auth.globus.org/" in result.output and "client_id=my-app" in result.output
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    saved = json.loads(tokens.read_text())
    assert saved["client_id"] == "my-app" and saved["refresh_token"].startswith("ref-")
    result = CliRunner().invoke(cli, ["globus", "logout"])
    assert result.exit_code == 0 and not tokens.exists()
    assert saved["refresh_token"] in globus_double.revoked
    assert "not logged in" in CliRunner().invoke(cli, ["globus", "logout"]).output


def test_login_with_a_bad_code_stores_nothing(tokens: Path) -> None:
    result = CliRunner().invoke(cli, ["globus", "login"], input="wrong\n")
    assert result.exit_code == 1 and "invalid_grant" in result.output
    assert not tokens.exists()


def test_real_adapter_needs_a_client_id(tokens: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARPSTORE_GLOBUS_CLIENT_ID", raising=False)
    with pytest.raises(ConnectorError, match="register a native app"):
        adapter.client_id()
