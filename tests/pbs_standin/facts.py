"""What each PBS system accepts, from its own documentation: the stand-in's rule book.

Kept apart from ``site-configs/`` on purpose: the stand-in must refuse what the
real ``qsub`` refuses even when a site config is wrong, so it may not read the
configs it is checking. Sources:

- Polaris: https://docs.alcf.anl.gov/polaris/running-jobs/ (queue table, prod's
  execution queues; ``-A``, walltime and ``filesystems`` are required; file
  systems home, eagle, grand).
- Aurora: https://docs.alcf.anl.gov/aurora/running-jobs-aurora/ (queue table,
  prod's execution queues) and the DAOS page (``-l filesystems=flare:daos_user_fs``
  starts the DAOS agent; there is no ``daos`` resource).
- generic: OpenPBS/PBS Pro built-in resources (Reference Guide, "Built-in
  Resources"); one execution queue ``workq`` without limits, no account needed.

Every queue also has PBS's minimum walltime on ALCF systems, 5 minutes. At the
walltime PBS sends SIGTERM to the job's processes and SIGKILL ``kill_delay``
seconds later (PBS Pro's default, 10 s, where a site documents none).
"""

from __future__ import annotations

from typing import Any

# Resources PBS Pro knows in -l (job-wide) and inside select chunks.
_BUILTIN_JOB = {"select", "place", "walltime", "cput", "mem", "ncpus", "nodes", "file", "software"}
_BUILTIN_CHUNK = {
    "ncpus", "mem", "vmem", "host", "vnode", "arch", "mpiprocs", "ompthreads", "ngpus",
}  # fmt: skip

HOUR = 3600

SYSTEMS: dict[str, dict[str, Any]] = {
    "polaris": {
        "require_account": True,
        "require": ["walltime", "filesystems", "select"],
        "job_resources": {"select", "place", "walltime", "filesystems"},
        "chunk_resources": {"system", "ncpus", "ngpus", "mem", "host", "vnode", "tier0", "tier1"},
        "filesystems": {"home", "eagle", "grand"},
        "min_walltime": 5 * 60,
        "kill_delay": 10,
        "default_queue": None,  # ALCF: jobs name their queue
        "queues": {
            "debug": {"nodes": (1, 2), "walltime": 1 * HOUR},
            "debug-scaling": {"nodes": (1, 10), "walltime": 1 * HOUR},
            "prod": {
                "nodes": (10, 496),
                "walltime": 24 * HOUR,
                "route": [((10, 24), 3 * HOUR), ((25, 99), 6 * HOUR), ((100, 496), 24 * HOUR)],
            },
            "preemptable": {"nodes": (1, 10), "walltime": 72 * HOUR},
            "demand": {"nodes": (1, 56), "walltime": 1 * HOUR},
            "capacity": {"nodes": (1, 4), "walltime": 168 * HOUR},
        },
    },
    "aurora": {
        "require_account": True,
        "require": ["walltime", "filesystems", "select"],
        "job_resources": {"select", "place", "walltime", "filesystems"},
        "chunk_resources": {"system", "ncpus", "mem", "host", "vnode", "tier0", "tier1"},
        "filesystems": {"home", "flare", "gecko", "daos_user_fs", "daos_perf_fs"},
        "min_walltime": 5 * 60,
        "kill_delay": 10,
        "default_queue": None,
        "queues": {
            "debug": {"nodes": (1, 2), "walltime": 1 * HOUR},
            "debug-scaling": {"nodes": (2, 31), "walltime": 1 * HOUR},
            "prod": {
                "nodes": (1, 7300),
                "walltime": 24 * HOUR,
                "route": [
                    ((1, 512), 6 * HOUR),
                    ((513, 1024), 12 * HOUR),
                    ((1025, 1919), 18 * HOUR),
                    ((1920, 7300), 24 * HOUR),
                ],
            },
            "prod-large": {"nodes": (1920, 7300), "walltime": 24 * HOUR},
            "visualization": {"nodes": (1, 32), "walltime": 8 * HOUR},
        },
    },
    "generic": {
        "require_account": False,
        "require": ["select"],
        "job_resources": _BUILTIN_JOB,
        "chunk_resources": _BUILTIN_CHUNK,
        "filesystems": None,  # no filesystems resource
        "min_walltime": 1,
        "kill_delay": 10,
        "default_queue": "workq",
        "queues": {"workq": {"nodes": (1, 1_000_000), "walltime": 10_000 * HOUR}},
    },
}
