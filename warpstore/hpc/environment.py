"""Which scheduler is this job under, and on which nodes?

PBS Pro (``PBS_JOBID``, ``PBS_NODEFILE``), Slurm (``SLURM_JOB_ID``,
``SLURM_JOB_NODELIST`` in its compressed hostlist form such as
``nid[001-004,007]``), or none (a laptop, a login node, a container).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field

__all__ = ["JobEnvironment", "detect_environment", "expand_hostlist", "local_rank_info"]


@dataclass(frozen=True)
class JobEnvironment:
    scheduler: str  # "pbs", "slurm" or "none"
    job_id: str | None
    nodes: list[str] = field(default_factory=list)

    @property
    def num_nodes(self) -> int:
        return max(1, len(self.nodes))


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets: ``a[1-2],b`` -> ``a[1-2]``, ``b``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in hostlist {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced '[' in hostlist {text!r}")
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _expand_one(item: str) -> list[str]:
    match = re.search(r"\[([^\[\]]*)\]", item)
    if match is None:
        return [item]
    prefix, suffix = item[: match.start()], item[match.end() :]
    out: list[str] = []
    for piece in match.group(1).split(","):
        r = _RANGE.match(piece.strip())
        if r is None:
            raise ValueError(f"bad range {piece!r} in hostlist item {item!r}")
        lo, hi = r.group(1), r.group(2) or r.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"descending range {piece!r} in hostlist item {item!r}")
        width = len(lo)  # zero padding, as in nid[001-004]
        for n in range(int(lo), int(hi) + 1):
            # the suffix may itself hold a bracket (rack[1-2]-node[01-02])
            out.extend(_expand_one(f"{prefix}{n:0{width}d}{suffix}"))
    return out


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand Slurm's compressed hostlist, e.g. ``nid[001-003,007],login1``."""
    hosts: list[str] = []
    for item in _split_top_level(hostlist):
        hosts.extend(_expand_one(item))
    return hosts


def _pbs_nodes(nodefile: str | None) -> list[str]:
    if not nodefile:
        return []
    seen: dict[str, None] = {}
    with open(nodefile) as f:
        for line in f:
            host = line.strip()
            if host:
                seen.setdefault(host, None)  # one line per rank slot: keep order, dedupe
    return list(seen)


def detect_environment(environ: dict[str, str] | None = None) -> JobEnvironment:
    env = os.environ if environ is None else environ
    if env.get("PBS_JOBID"):
        return JobEnvironment("pbs", env["PBS_JOBID"], _pbs_nodes(env.get("PBS_NODEFILE")))
    if env.get("SLURM_JOB_ID"):
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        return JobEnvironment("slurm", env["SLURM_JOB_ID"], expand_hostlist(nodelist))
    return JobEnvironment("none", None, [socket.gethostname().split(".")[0]])


def local_rank_info(environ: dict[str, str] | None = None) -> tuple[int | None, int | None]:
    """(rank on this node, ranks on this node) from the launcher's environment, if it says.

    Read without initialising MPI, for wrappers that must not (the app does).
    """
    env = os.environ if environ is None else environ
    per_node = env.get("WARPSTORE_SIMULATE_NODES", "")
    if per_node.isdigit() and int(per_node) > 0:
        # test-only node simulation (see warpstore.server.runtime.simulated_node)
        for rank_var, size_var in (("PMI_RANK", "PMI_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            if rank_var in env:
                rank, per = int(env[rank_var]), int(per_node)
                world = int(env.get(size_var, "0") or 0)
                start = rank - rank % per
                return rank % per, min(per, world - start) if world else per
    pairs = [
        ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH hydra
        ("PALS_LOCAL_RANKID", "PALS_LOCAL_SIZE"),  # HPE PALS (Polaris, Aurora)
        ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
        ("SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    ]
    for rank_var, size_var in pairs:
        if rank_var in env:
            size = env.get(size_var, "")
            return int(env[rank_var]), int(size) if size.isdigit() else None
    return None, None
