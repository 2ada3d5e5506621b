"""Site configs: what a job on a given machine needs, validated on load.

One YAML file per site in ``site-configs/``. Every key is checked: an unknown
key, a wrong type or a malformed walltime is an error that names the file,
the key and what is allowed, before anything is submitted. A user's own file
(``--site ./mysite.yaml``) or ``--set key=value`` (dotted for nested keys,
``--set connector.type=redis``) overrides any key.

Scheduler option names follow dask-jobqueue/Parsl: ``account``, ``queue``,
``walltime``, ``select``, ``scheduler_options``, ``worker_init``.

Each site carries its table of ``queues`` (node range, walltime limit, purpose,
from the site's own documentation): a job with no queue gets the first queue
that fits its nodes and walltime, and a queue that does not fit is refused
here, with the queues that would, instead of by ``qsub`` (or, worse, after the
queue wait). Walltimes are read in every form users type (see
:mod:`warpstore.hpc.walltime`) and kept as ``HH:MM:SS``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from warpstore.hpc.data import data_dir
from warpstore.hpc.walltime import WalltimeError, format_walltime, parse_walltime

__all__ = [
    "SiteConfig",
    "SiteConfigError",
    "check_job",
    "choose_queue",
    "list_sites",
    "load_site",
    "validate_walltime",
]

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
    "walltime": ((str, int), "90 (minutes), 30:00, 01:30:00, 1-00:00:00, 90m or 1h30m"),
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
    "queues": ((dict,), "the site's queues: name -> nodes [min, max], walltime, purpose"),
    "queue_key": ((str,), "which option the queue names go to: queue (-q/-p) or qos"),
    "requires": ((list,), "keys a job must have at render time, e.g. [account, filesystems]"),
    "hints": ((dict,), "key -> how to fill it in, for the error when it is missing"),
    "exclusive": ((bool,), "ask for whole nodes (--exclusive, place=...:excl)"),
    "memory_per_node": ((str, type(None)), "memory per node to request, e.g. 256GB"),
    "node_types": ((dict,), "constraint -> per-node keys (cores_per_node, gpus_per_node...)"),
    "slingshot": ((bool,), "HPE Slingshot network: VNI options for cxi traffic"),
    "request_gpus": ((bool,), "ask for gpus_per_node (--gpus-per-node, PBS ngpus)"),
    "python_env": ((str, type(None)), "auto, none, a venv path or conda:ENV for the job"),
    "early_signal": ((int,), "seconds before the walltime to send SIGTERM to the launcher"),
    "min_walltime": ((str, int, type(None)), "shortest walltime the site's queues accept"),
}
_QUEUE: dict[str, tuple[tuple[type, ...], str]] = {
    "nodes": ((list,), "[min, max] nodes"),
    "walltime": ((str, int), "longest walltime"),
    "purpose": ((str,), "what the queue is for"),
    "auto": ((bool,), "may be chosen when no queue is given (false: preemptable, by request)"),
    "limits": ((list,), "walltime by node count: [{nodes: [min, max], walltime: ...}]"),
}
_NODE_TYPE_KEYS = ("cores_per_node", "gpus_per_node", "memory_per_node")
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
    "remote_peer_timeout": ((int, float), "seconds an endpoint waits for a remote one (60)"),
}


def validate_walltime(value: str | int, where: str = "walltime") -> str:
    """``value`` as ``HH:MM:SS``; the error names ``where`` (an option or a file's key)."""
    try:
        return format_walltime(parse_walltime(value))
    except WalltimeError as e:
        raise SiteConfigError(f"{where}: {e}") from None


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
    origins: dict[str, str] = field(default_factory=dict)  # key -> option that set it

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
    "queues": {},
    "queue_key": "queue",
    "requires": [],
    "hints": {},
    "exclusive": False,
    "memory_per_node": None,
    "node_types": {},
    "slingshot": False,
    "request_gpus": True,
    "python_env": None,
    "early_signal": 120,
    "min_walltime": None,
}


def validate(data: Any, source: str, origins: dict[str, str] | None = None) -> SiteConfig:
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
    origins = origins or {}
    if "walltime" in data:
        where = origins.get("walltime", f"{source}: key 'walltime'")
        data["walltime"] = validate_walltime(data["walltime"], where)
    for key in ("modules", "worker_init", "scheduler_options", "requires"):
        for item in data.get(key, []):
            if not isinstance(item, str):
                raise SiteConfigError(f"{source}: every item of {key!r} must be a string")
    if data.get("nodes", 1) < 1:
        where = origins.get("nodes", f"{source}: key 'nodes'")
        raise SiteConfigError(f"{where}: must be at least 1, got {data['nodes']}")
    if data.get("min_walltime") is not None:
        data["min_walltime"] = validate_walltime(
            data["min_walltime"], f"{source}: key 'min_walltime'"
        )
    if data.get("early_signal", 0) < 0:
        raise SiteConfigError(f"{source}: key 'early_signal' must be 0 (off) or more seconds")
    if data.get("queue_key", "queue") not in ("queue", "qos"):
        raise SiteConfigError(f"{source}: key 'queue_key' must be queue or qos")
    for name, queue in data.get("queues", {}).items():
        _check_queue(str(name), queue, source)
    for constraint, keys in data.get("node_types", {}).items():
        if not isinstance(keys, dict) or set(keys) - set(_NODE_TYPE_KEYS):
            raise SiteConfigError(
                f"{source}: node_types.{constraint} must map {', '.join(_NODE_TYPE_KEYS)}"
            )
    simulated = os.environ.get("WARPSTORE_SIMULATE_NODES", "").isdigit()  # tests' "nodes"
    if data["scheduler"] == "none" and data.get("nodes", 1) > 1 and not simulated:
        # No scheduler: the job is this one machine. Starting "N nodes" of servers on one
        # host would silently run one server per rank on the same node.
        where = origins.get("nodes", f"{source}: key 'nodes'")
        raise SiteConfigError(
            f"{where}: site {data['name']!r} has no scheduler and is one node (this machine), "
            f"got {data['nodes']} nodes: use a site with a scheduler, or 1"
        )
    merged = copy.deepcopy(_DEFAULTS)
    merged.update(copy.deepcopy(data))
    merged["connector"] = {"type": "zmq", **merged["connector"]}
    node_type = merged["node_types"].get(merged.get("constraint") or "")
    for key, value in (node_type or {}).items():
        if key not in origins:  # an explicit --set wins over the node type's value
            merged[key] = value
    return SiteConfig(merged, source, dict(origins))


def _check_queue(name: str, queue: Any, source: str) -> None:
    where = f"{source}: queues.{name}"
    if not isinstance(queue, dict):
        raise SiteConfigError(f"{where} must be a mapping (nodes, walltime, purpose)")
    _check_table(queue, _QUEUE, source, f"queues.{name}.")
    nodes = queue.get("nodes")
    if (
        not isinstance(nodes, list)
        or len(nodes) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in nodes)
        or not 1 <= nodes[0] <= nodes[1]
    ):
        raise SiteConfigError(f"{where}.nodes must be [min, max] with 1 <= min <= max")
    if "walltime" not in queue:
        raise SiteConfigError(f"{where}: missing walltime (the queue's limit)")
    queue["walltime"] = validate_walltime(queue["walltime"], f"{where}.walltime")
    for i, limit in enumerate(queue.get("limits", [])):
        if not isinstance(limit, dict) or set(limit) != {"nodes", "walltime"}:
            raise SiteConfigError(f"{where}.limits[{i}] must have nodes and walltime")
        limit["walltime"] = validate_walltime(limit["walltime"], f"{where}.limits[{i}].walltime")


def _queue_limit(queue: dict[str, Any], nodes: int) -> int | None:
    """Longest walltime (seconds) ``queue`` gives ``nodes`` nodes; None if it takes no such job."""
    low, high = queue["nodes"]
    if not low <= nodes <= high:
        return None
    limits = queue.get("limits")
    if not limits:
        return parse_walltime(queue["walltime"])
    for limit in limits:  # a routing queue: the execution queue for this size sets the limit
        if limit["nodes"][0] <= nodes <= limit["nodes"][1]:
            return parse_walltime(limit["walltime"])
    return None


def _describe_queue(name: str, queue: dict[str, Any]) -> str:
    low, high = queue["nodes"]
    size = f"{low} node" if low == high == 1 else f"{low}-{high} nodes"
    limits = queue.get("limits")
    if not limits:
        return f"{name} ({size}, up to {queue['walltime']})"
    tiers = ", ".join(f"{x['walltime']} for {x['nodes'][0]}-{x['nodes'][1]}" for x in limits)
    return f"{name} ({size}, up to {tiers})"


def fitting_queues(
    site: SiteConfig, nodes: int, walltime: str, auto_only: bool = False
) -> list[str]:
    seconds = parse_walltime(walltime)
    out = []
    for name, queue in site.get("queues", {}).items():
        limit = _queue_limit(queue, nodes)
        if limit is not None and seconds <= limit and (queue.get("auto", True) or not auto_only):
            out.append(str(name))
    return out


def choose_queue(site: SiteConfig) -> str | None:
    """Check the job's queue against the site's table, or pick the first that fits.

    Returns the queue's name (None when the site has no table and no queue); the
    chosen name is written into the site's ``queue`` (or ``qos``) key.
    """
    key = site.get("queue_key", "queue")
    queues: dict[str, Any] = site.get("queues", {})
    nodes, walltime = int(site["nodes"]), str(site["walltime"])
    shortest = site.get("min_walltime")
    if shortest and parse_walltime(walltime) < parse_walltime(shortest):
        where = site.origins.get("walltime", f"{site.source}: key 'walltime'")
        raise SiteConfigError(
            f"{where}: {walltime} is shorter than site {site.name!r} accepts ({shortest})"
        )
    wanted = site.get(key)
    if not queues:
        return str(wanted) if wanted else None
    fit = fitting_queues(site, nodes, walltime)
    job = f"{nodes} node{'s' if nodes != 1 else ''} for {walltime}"
    if wanted:
        if wanted in fit:
            return str(wanted)
        where = site.origins.get(key, f"{site.source}: key {key!r}")
        if wanted not in queues:
            known = "; ".join(_describe_queue(n, q) for n, q in queues.items())
            raise SiteConfigError(
                f"{where}: site {site.name!r} has no queue {wanted!r}; its queues: {known}"
            )
        others = ", ".join(fit) if fit else "none (fewer nodes or a shorter walltime)"
        raise SiteConfigError(
            f"{where}: queue {wanted!r} does not take {job}: it is "
            f"{_describe_queue(str(wanted), queues[wanted])}; queues that fit: {others}"
        )
    auto = fitting_queues(site, nodes, walltime, auto_only=True)
    if not auto:
        known = "; ".join(_describe_queue(n, q) for n, q in queues.items())
        hint = f" (by request or preemptable: {', '.join(fit)}, give --queue)" if fit else ""
        raise SiteConfigError(
            f"no queue of site {site.name!r} takes {job}{hint}; its queues: {known}"
        )
    site.data[key] = auto[0]
    return auto[0]


def check_job(site: SiteConfig, connector: str | None = None) -> None:
    """What would fail at job start fails now: required keys, connector settings."""
    missing = [k for k in site.get("requires", []) if not site.get(k)]
    if missing:
        hints = site.get("hints", {})
        parts = [f"{k} ({hints[k]})" if k in hints else k for k in missing]
        raise SiteConfigError(
            f"site {site.name!r} requires {' and '.join(parts)}: the scheduler refuses a job "
            "without it"
        )
    kind = connector or site["connector"]["type"]
    conn = site["connector"]
    kinds = {kind}
    if kind == "multi":
        routing = conn.get("routing", {})
        kinds |= {routing.get("node", "zmq"), routing.get("large", "file")}
    nodes = int(site["nodes"])
    if "daos" in kinds:
        daos = conn.get("daos", {})
        if not daos.get("pool") or not daos.get("container"):
            raise SiteConfigError(
                f"site {site.name!r}: the daos connector needs a pool and a container: "
                "--set connector.daos.pool=POOL --set connector.daos.container=CONT "
                "(create it with `daos cont create POOL CONT --type PYTHON`), or choose "
                "another --connector"
            )
        fs = site.get("filesystems")
        if site.scheduler == "pbs" and fs is not None and "daos" not in str(fs):
            raise SiteConfigError(
                f"site {site.name!r}: the daos connector needs a DAOS file system in "
                f"filesystems (e.g. --set filesystems={fs}:daos_user_fs), got {fs!r}"
            )
    if "file" in kinds and nodes > 1:
        store = conn.get("file", {}).get("store_dir")
        local = [p for p in (site.get("local_scratch"), "/tmp", "/dev/shm") if p]
        inside = [p for p in local if str(store) == p or str(store).startswith(p.rstrip("/") + "/")]
        if store and inside:
            raise SiteConfigError(
                f"site {site.name!r}: connector.file.store_dir {store} is node-local, so other "
                "nodes cannot read the objects: give a shared path or drop it (the default is "
                "the job directory, on the submit file system)"
            )
    if "redis" in kinds and nodes > 1:
        host = str(conn.get("redis", {}).get("host", "localhost"))
        if host in ("localhost", "::1") or host.startswith("127."):
            raise SiteConfigError(
                f"site {site.name!r}: connector.redis.host is {host}, which other nodes cannot "
                "reach: --set connector.redis.host=HOST with a Redis server every node can reach"
            )


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
    origins: dict[str, str] = {}
    for item in overrides:
        key = item.partition("=")[0].strip()
        origins[key] = f"--set {key}"
    queue_key = data.get("queue_key", "queue") if isinstance(data, dict) else "queue"
    for key, value in (values or {}).items():
        if value is not None:
            target = queue_key if key == "queue" else key
            data[target] = value
            origins[target] = f"--{key}"
    source = str(path) + (" (with --set overrides)" if overrides else "")
    return validate(data, source, origins)
