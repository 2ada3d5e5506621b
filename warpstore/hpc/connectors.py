"""Build the connector a site config (or a job manifest) names."""

from __future__ import annotations

import os
from typing import Any

from warpstore.hpc.siteconfig import SiteConfig
from warpstore.units import parse_size

__all__ = ["NODE_SERVER_TRANSPORTS", "connector_from_site", "node_server_settings", "zmq_settings"]

NODE_SERVER_TRANSPORTS = ("zmq", "ucx", "margo")


def zmq_settings(site: SiteConfig) -> dict[str, Any]:
    """ZMQConnector arguments from a site config (no address: each node finds its own)."""
    conn = site["connector"]
    limit = conn.get("memory_limit")
    settings = {
        "interface": site.get("interface"),
        "port": conn.get("port"),
        "memory_limit": parse_size(limit) if limit is not None else None,
        "timeout": float(conn.get("timeout", 30.0)),
    }
    if conn.get("encrypt"):  # end-to-end AES-GCM of object data (see the README's cost)
        settings["encrypt"] = True
    return settings


def node_server_settings(site: SiteConfig, kind: str) -> dict[str, Any]:
    """Arguments of the node-server connector ``kind`` (zmq or ucx) from a site config."""
    settings = zmq_settings(site)
    if kind == "ucx":
        settings["ucx_env"] = {str(k): str(v) for k, v in site["connector"].get("ucx", {}).items()}
    if kind == "margo":
        settings["protocol"] = str(site["connector"].get("margo", {}).get("protocol", "tcp"))
    return settings


def routing_config(
    site: SiteConfig, node_kind: str, node_config: dict[str, Any], job_dir: str
) -> dict[str, Any]:
    """A MultiConnector config for a launched job: small objects through the node servers,
    large ones to the site's `large` store (DAOS, or files under the job directory), and
    objects tagged ``superset_tags=["remote"]`` to the site's endpoints (other sites).

    Built from configs, not connectors, so that nothing here starts a node server.
    """
    from warpstore.connectors.multi import Policy
    from warpstore.connectors.protocols import connector_path

    routing = site["connector"].get("routing", {})
    threshold = parse_size(routing.get("large_threshold", "64MiB"))
    large_kind = routing.get("large", "file")
    large = connector_from_site(site, large_kind, job_dir)
    node_paths = {
        "zmq": "warpstore.connectors.zmq:ZMQConnector",
        "ucx": "warpstore.connectors.ucx:UCXConnector",
        "margo": "warpstore.connectors.margo:MargoConnector",
    }
    config = {
        "node": {
            "path": node_paths[node_kind],
            "config": node_config,
            "policy": Policy(priority=1, max_size_bytes=threshold).as_dict(),
        },
        large_kind: {
            "path": connector_path(large),
            "config": large.config(),
            "policy": Policy(priority=0).as_dict(),
        },
    }
    large.close()
    remote = routing.get("remote_endpoints")
    if remote:  # other sites: objects the workflow tags superset_tags=["remote"]
        config["remote"] = {
            "path": "warpstore.connectors.endpoint:EndpointConnector",
            "config": _endpoint_config(remote, routing.get("remote_peer_timeout")),
            "policy": Policy(priority=2, superset_tags=["remote"]).as_dict(),
        }
    return config


def _endpoint_config(remote: list[Any], peer_timeout: float | None) -> dict[str, Any]:
    """EndpointConnector settings; its own timeout outlasts the endpoint's wait for a peer."""
    config: dict[str, Any] = {"endpoints": [str(u) for u in remote], "timeout": 120.0}
    if peer_timeout is not None:
        config["peer_timeout"] = float(peer_timeout)
        config["timeout"] = max(120.0, float(peer_timeout) + 60.0)
    return config


def connector_from_site(
    site: SiteConfig, kind: str | None = None, job_dir: str | os.PathLike[str] | None = None
) -> Any:
    """The connector ``kind`` (default: the site's) with the site's settings.

    Inside a launched job (``job_dir`` given), a file store without a configured
    ``store_dir`` goes to ``<job_dir>/objects``: every node must see the objects, and the
    job directory is on the submit file system, unlike node-local scratch.
    """
    kind = kind or site["connector"]["type"]
    conn = site["connector"]
    if kind == "zmq":
        from warpstore.connectors.zmq import ZMQConnector

        return ZMQConnector(**zmq_settings(site))
    if kind == "ucx":
        from warpstore.connectors.ucx import UCXConnector

        return UCXConnector(**node_server_settings(site, "ucx"))
    if kind == "margo":
        from warpstore.connectors.margo import MargoConnector

        return MargoConnector(**node_server_settings(site, "margo"))
    if kind == "daos":
        from warpstore.connectors.daos import DAOSConnector

        daos = conn.get("daos", {})
        if not daos.get("pool") or not daos.get("container"):
            raise ValueError(
                f"site {site.name!r}: the daos connector needs connector.daos.pool and "
                "connector.daos.container (e.g. --set connector.daos.pool=MYPOOL --set "
                "connector.daos.container=warpstore); create the container with "
                "`daos cont create MYPOOL warpstore --type PYTHON`"
            )
        return DAOSConnector(
            str(daos["pool"]), str(daos["container"]), str(daos.get("namespace", "warpstore"))
        )
    if kind == "redis":
        from warpstore.connectors.redis import RedisConnector

        redis = conn.get("redis", {})
        return RedisConnector(redis.get("host", "localhost"), int(redis.get("port", 6379)))
    if kind == "file":
        from warpstore.connectors.file import FileConnector

        store_dir = conn.get("file", {}).get("store_dir")
        if not store_dir:
            store_dir = (
                os.path.join(job_dir, "objects")
                if job_dir is not None
                else os.path.join(site.get("local_scratch") or "/tmp", "warpstore-files")
            )
        return FileConnector(os.path.expandvars(str(store_dir)), clear=False)  # shared by all tasks
    raise NotImplementedError(
        f"site {site.name!r} asks for the {kind!r} connector, which this version of warpstore "
        "does not provide (available: zmq, ucx, margo, daos, redis, file); use --connector "
        "or --set connector.type=..."
    )
