"""Where endpoints live on disk and what ``warpstore endpoint configure`` records.

``$WARPSTORE_ENDPOINT_HOME`` (default ``~/.local/share/warpstore/endpoints``)
holds one private (0700) directory per endpoint: ``config.json``, the daemon's
``endpoint.pid`` and ``endpoint.log``, its local socket ``endpoint.sock``, and
``objects/`` when the endpoint persists its store.
"""

from __future__ import annotations

import json
import os
import re
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from warpstore.server.runtime import write_json_atomic

__all__ = ["EndpointConfig", "endpoint_dir", "endpoints_home", "list_endpoints", "load_config"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def endpoints_home() -> Path:
    default = Path.home() / ".local" / "share" / "warpstore" / "endpoints"
    return Path(os.environ.get("WARPSTORE_ENDPOINT_HOME", str(default)))


def endpoint_dir(name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(
            f"endpoint name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return endpoints_home() / name


@dataclass
class EndpointConfig:
    name: str
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    relay_server: str | None = None
    relay_token_file: str | None = None
    persist: bool = False
    # host candidates for the peer connections (default: every non-loopback address,
    # as aioice gathers them); e.g. the high-speed interface's address only
    addresses: list[str] = field(default_factory=list)
    max_memory: int | None = None
    # seconds to wait for another endpoint (peer connection and reply), unless a
    # request names its own (EndpointConnector(peer_timeout=...)); the original
    # ProxyStore's Endpoint(peer_timeout=...)
    peer_timeout: float = 60.0

    @property
    def directory(self) -> Path:
        return endpoint_dir(self.name)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        write_json_atomic(self.directory / "config.json", asdict(self))


def load_config(name: str) -> EndpointConfig:
    path = endpoint_dir(name) / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no endpoint named {name!r} (no {path}): run `warpstore endpoint configure {name}`"
        ) from None
    return EndpointConfig(**data)


def list_endpoints() -> list[EndpointConfig]:
    home = endpoints_home()
    if not home.is_dir():
        return []
    return [
        load_config(d.name) for d in sorted(home.iterdir()) if (d / "config.json").exists()
    ]
