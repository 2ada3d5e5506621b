"""Site configs: what a job on a given machine needs, validated on load.

One YAML file per site in ``site-configs/``. Every key is checked: an unknown
key, a wrong type or a malformed walltime is an error that names the file,
the key and what is allowed, before anything is submitted. A user's own file
(``--site ./mysite.yaml``) or ``--set key=value`` (dotted for nested keys,
``--set connector.type=redis``) overrides any key.

Scheduler option names follow dask-jobqueue/Parsl: ``account``, ``queue``,
``walltime``, ``select``, ``scheduler_options``, ``worker_init``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from warpstore.hpc.data import data_dir

__all__ = ["SiteConfig", "SiteConfigError", "list_sites", "load_site", "validate_walltime"]

CONNECTORS = ("zmq", "ucx", "margo", "daos", "redis", "file", "multi")


class SiteConfigError(ValueError):
    """A site config that cannot be used, with where and why."""


# key -> (allowed types, what it means). Nested dicts have their own tables.
_TOP: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "site name"),
    "description": ((str,), "one line about the machine"),
    "docs": ((str,), "the site's own job documentation"),
    "scheduler": ((str,), "pbs, slurm or none"),
    "account": ((str, type(None)), "allocation/project (-A)"),
    "queue": ((str, type(None)), "PBS queue (-q) or Slurm partition (-p)"),
    "qos": ((str, type(None)), "Slurm QOS (-q)"),
    "constraint": ((str, type(None)), "Slurm constraint (-C), e.g. cpu, gpu, nvme"),
    "select": ((str, type(None)), "PBS select resources after the node count, e.g. system=polaris"),
    "place": ((str, type(None)), "PBS place, e.g. scatter"),
    "filesystems": ((str, type(None)), "PBS -l filesystems=..., e.g. home:eagle"),
    "walltime": ((str,), "HH:MM:SS"),
    "nodes": ((int,), "number of nodes"),
    "cores_per_node": ((int,), "CPU cores per node"),
    "gpus_per_node": ((int,), "GPUs per node"),
    "modules": ((list,), "modules to load, in order"),
    "environment": ((dict,), "environment variables to set"),
    "worker_init": ((list,), "shell lines run before the launch"),
    "scheduler_options": ((list,), "raw extra directives, without the #PBS/#SBATCH prefix"),
    "directives": ((dict,), "override a built-in directive: name -> value (null skips it)"),
    "launcher": ((dict,), "how to start one process per node"),
    "interface": ((str, type(None)), "high-speed network interface, e.g. hsn0"),
    "local_scratch": ((str, type(None)), "node-local scratch directory"),
    "job_dir": ((str, type(None)), "where manifests and reports go (default: submit dir)"),
    "connector": ((dict,), "default connector and its settings"),
}
_LAUNCHER: dict[str, tuple[tuple[type, ...], str]] = {
    "command": ((str,), "mpiexec or srun"),
    "servers": ((str,), "line that starts one server rank per node; {nodes} is filled in"),
    "app": ((str, type(None)), "line the user's MPI program would use (for the docs)"),
    "elastic_transport": ((str,), "transport of servers started outside the launcher"),
}
_CONNECTOR: dict[str, tuple[tuple[type, ...], str]] = {
    "type": ((str,), " | ".join(CONNECTORS)),
    "memory_limit": ((str, int, type(None)), "per-server limit, e.g. 64GiB"),
    "port": ((int, type(None)), "server port (default: any free port)"),
    "timeout": ((int, float), "seconds to wait for a server"),
    "encrypt": ((bool,), "node servers: encrypt object data end to end (AES-GCM)"),
    "ucx": ((dict,), "UCX settings: UCX_TLS, UCX_NET_DEVICES, ..."),
    "margo": ((dict,), "Margo settings: protocol (cxi, ofi+verbs, tcp)"),
    "daos": ((dict,), "DAOS settings: pool, container, namespace"),
    "redis": ((dict,), "Redis settings: host, port"),
    "file": ((dict,), "File settings: store_dir"),
    "routing": ((dict,), "multi: node (zmq|ucx|margo), large (daos|file|redis), large_threshold"),
}
_ROUTING: dict[str, tuple[tuple[type, ...], str]] = {
    "node": ((str,), "node-server transport for small objects: zmq, ucx or margo"),
    "large": ((str,), "where objects above large_threshold go: daos, file or redis"),
    "large_threshold": ((str, int), "size above which objects go to `large`, e.g. 64MiB"),
    "remote_endpoints": ((list,), "endpoint UUIDs: objects tagged superset_tags=['remote']"),
}
_WALLTIME = re.compile(r"^(\d{1,4}):([0-5]\d):([0-5]\d)$")


def validate_walltime(value: str, where: str = "walltime") -> str:
    if not isinstance(value, str) or not _WALLTIME.match(value):
        raise SiteConfigError(
            f"{where}: {value!r} is not a walltime: use HH:MM:SS, e.g. 01:00:00 "
            "(hours may exceed 24, e.g. 48:00:00)"
        )
    return value


def _check_table(
    data: dict[str, Any],
    table: dict[str, tuple[tuple[type, ...], str]],
    source: str,
    prefix: str = "",
) -> None:
    for key, value in data.items():
        if key not in table:
            allowed = ", ".join(sorted(table))
            raise SiteConfigError(f"{source}: unknown key '{prefix}{key}'; allowed keys: {allowed}")
        types, meaning = table[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise SiteConfigError(
                f"{source}: key '{prefix}{key}' must be {names} ({meaning}), "
                f"got {type(value).__name__} {value!r}"
            )


@dataclass
class SiteConfig:
    """A validated site config: ``data`` holds every key, ``source`` says where from."""

    data: dict[str, Any]
    source: str

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def scheduler(self) -> str:
        return str(self.data["scheduler"])

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=False)


_DEFAULTS: dict[str, Any] = {
    "description": "",
    "docs": None,
    "account": None,
    "queue": None,
    "qos": None,
    "constraint": None,
    "select": None,
    "place": None,
    "filesystems": None,
    "walltime": "01:00:00",
    "nodes": 1,
    "cores_per_node": 1,
    "gpus_per_node": 0,
    "modules": [],
    "environment": {},
    "worker_init": [],
    "scheduler_options": [],
    "directives": {},
    "interface": None,
    "local_scratch": None,
    "job_dir": None,
    "connector": {"type": "zmq"},
}


def validate(data: Any, source: str) -> SiteConfig:
    if not isinstance(data, dict):
        raise SiteConfigError(
            f"{source}: a site config is a YAML mapping, got {type(data).__name__}"
        )
    _check_table(data, _TOP, source)
    for required in ("name", "scheduler", "launcher"):
        if required not in data:
            raise SiteConfigError(f"{source}: missing required key {required!r}")
    if data["scheduler"] not in ("pbs", "slurm", "none"):
        raise SiteConfigError(
            f"{source}: key 'scheduler' must be pbs, slurm or none, got {data['scheduler']!r}"
        )
    _check_table(data["launcher"], _LAUNCHER, source, "launcher.")
    if "servers" not in data["launcher"]:
        raise SiteConfigError(f"{source}: missing required key 'launcher.servers'")
    connector = data.get("connector", {})
    _check_table(connector, _CONNECTOR, source, "connector.")
    if connector.get("type", "zmq") not in CONNECTORS:
        raise SiteConfigError(
            f"{source}: key 'connector.type' must be one of {', '.join(CONNECTORS)}, "
            f"got {connector.get('type')!r}"
        )
    routing = connector.get("routing", {})
    _check_table(routing, _ROUTING, source, "connector.routing.")
    if routing.get("node", "zmq") not in ("zmq", "ucx", "margo"):
        raise SiteConfigError(
            f"{source}: key 'connector.routing.node' must be zmq, ucx or margo, "
            f"got {routing['node']!r}"
        )
    if routing.get("large", "file") not in ("daos", "file", "redis"):
        raise SiteConfigError(
            f"{source}: key 'connector.routing.large' must be daos, file or redis, "
            f"got {routing['large']!r}"
        )
    for key in connector.get("ucx", {}):
        if not str(key).startswith(("UCX_", "UCXPY_", "RAPIDS_")):
            raise SiteConfigError(
                f"{source}: key 'connector.ucx.{key}' is not a UCX setting: use UCX_* "
                "variables (UCX_TLS, UCX_NET_DEVICES...) or RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY"
            )
    if "walltime" in data:
        validate_walltime(data["walltime"], f"{source}: key 'walltime'")
    for key in ("modules", "worker_init", "scheduler_options"):
        for item in data.get(key, []):
            if not isinstance(item, str):
                raise SiteConfigError(f"{source}: every item of {key!r} must be a string")
    if data.get("nodes", 1) < 1:
        raise SiteConfigError(f"{source}: key 'nodes' must be at least 1")
    merged = copy.deepcopy(_DEFAULTS)
    merged.update(copy.deepcopy(data))
    merged["connector"] = {"type": "zmq", **merged["connector"]}
    return SiteConfig(merged, source)


def list_sites() -> list[str]:
    return sorted(p.stem for p in data_dir("site-configs").glob("*.yaml"))


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SiteConfigError(f"--set {item!r}: use key=value, e.g. --set queue=debug")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise SiteConfigError(f"--set {item!r}: cannot read the value: {e}") from e
    if isinstance(value, (int, float)) and key.strip() in ("walltime", "account", "queue"):
        value = raw  # 01:00:00 must stay text; so must numeric project names
    return key.strip().split("."), value


def load_site(
    site: str | Path, overrides: Sequence[str] = (), values: dict[str, Any] | None = None
) -> SiteConfig:
    """Load a site by name (``polaris``) or path (``./mysite.yaml``), then apply overrides."""
    text_site = str(site)
    if text_site.endswith((".yaml", ".yml")) or "/" in text_site:
        path = Path(text_site)
    else:
        path = data_dir("site-configs") / f"{text_site}.yaml"
        if not path.exists():
            raise SiteConfigError(
                f"unknown site {text_site!r}; known sites: {', '.join(list_sites())} "
                "(or give the path of your own YAML file)"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise SiteConfigError(f"site config {path} does not exist") from e
    except yaml.YAMLError as e:
        raise SiteConfigError(f"{path}: not valid YAML: {e}") from e
    data = data if data is not None else {}
    for item in overrides:
        keys, value = _parse_override(item)
        target = data
        for k in keys[:-1]:
            target = target.setdefault(k, {})
            if not isinstance(target, dict):
                raise SiteConfigError(f"--set {item!r}: {k!r} is not a mapping")
        target[keys[-1]] = value
    for key, value in (values or {}).items():
        if value is not None:
            data[key] = value
    source = str(path) + (" (with --set overrides)" if overrides else "")
    return validate(data, source)
