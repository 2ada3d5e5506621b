"""Render a site's batch script from its Jinja2 template.

Everything a job needs is decided here, before the queue wait: the queue (from
the site's table), the Python environment the script activates, the scheduler's
own walltime format, whole nodes, GPUs and memory per node, the early walltime
signal, dependencies, mail, the Slingshot VNI request, and extra directives.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

import jinja2

from warpstore import __version__
from warpstore.hpc.data import data_dir
from warpstore.hpc.pyenv import PythonEnv, resolve_python_env
from warpstore.hpc.siteconfig import (
    CONNECTORS,
    SiteConfig,
    SiteConfigError,
    check_job,
    choose_queue,
    validate_walltime,
)
from warpstore.hpc.walltime import format_walltime, parse_walltime
from warpstore.units import parse_size

__all__ = ["DIRECTIVE_NAMES", "TEMPLATES", "launch_command", "render_job_script"]

TEMPLATES = {"pbs": "pbs/job.pbs.j2", "slurm": "slurm/job.sh.j2"}

# Built-in directives `--directive NAME=VALUE` may replace (NAME= drops it).
DIRECTIVE_NAMES = {
    "pbs": (
        "name", "account", "queue", "select", "place", "walltime", "filesystems", "join",
        "output", "dependency", "mail_user", "mail_type",
    ),
    "slurm": (
        "name", "account", "queue", "qos", "constraint", "nodes", "exclusive", "gpus", "memory",
        "walltime", "signal", "network", "dependency", "mail_user", "mail_type", "output",
    ),
}  # fmt: skip

_DEPENDENCY = re.compile(r"^(after|afterok|afternotok|afterany):([\w.\[\]-]+(?::[\w.\[\]-]+)*)$")
_MAIL_TYPES = {"NONE": "n", "BEGIN": "b", "END": "e", "FAIL": "a", "ALL": "abe"}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(
            [str(data_dir("templates")), *(str(data_dir("templates") / d) for d in TEMPLATES)]
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        autoescape=False,  # shell scripts, not HTML
    )
    env.filters["shellquote"] = lambda v: shlex.quote(str(v))
    return env


def launch_command(
    site: str,
    command: Sequence[str],
    *,
    connector: str | None = None,
    overrides: Sequence[str] = (),
    python: str | None = None,
) -> str:
    """The ``warpstore launch`` line a job script runs (``<python> -m warpstore launch``)."""
    parts = [python, "-m", "warpstore"] if python else ["warpstore"]
    parts += ["launch", "--site", site]
    if connector:
        parts += ["--connector", connector]
    for item in overrides:
        parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in [*parts, "--", *command])


def _dependency(value: str | None) -> str | None:
    """``123`` or ``afterok:123[:456]`` (Slurm and PBS spell it alike)."""
    if not value:
        return None
    text = value if ":" in value else f"afterok:{value}"
    if not _DEPENDENCY.match(text):
        raise SiteConfigError(
            f"--dependency {value!r}: use JOBID or TYPE:JOBID[:JOBID...] with TYPE one of "
            "after, afterok, afternotok, afterany (e.g. afterok:1234)"
        )
    return text


def _mail_type(value: str | None, scheduler: str) -> str | None:
    if not value:
        return None
    kinds = [v.strip().upper() for v in value.split(",") if v.strip()]
    bad = [k for k in kinds if k not in _MAIL_TYPES]
    if bad:
        raise SiteConfigError(
            f"--mail-type {value!r}: unknown {', '.join(bad)}; use BEGIN, END, FAIL, ALL or NONE"
        )
    if scheduler == "slurm":
        return ",".join(kinds)
    letters = "".join(_MAIL_TYPES[k] for k in kinds)
    return "n" if "n" in letters else "".join(sorted(set(letters), key="abe".index))


def _needs_vni(site: SiteConfig, kind: str) -> bool:
    """True when the job's servers talk cxi (Margo over Slingshot)."""
    conn = site["connector"]
    nodes_kind = conn.get("routing", {}).get("node", "zmq") if kind == "multi" else kind
    return nodes_kind == "margo" and conn.get("margo", {}).get("protocol", "tcp") == "cxi"


def render_job_script(
    site: SiteConfig,
    command: Sequence[str],
    *,
    site_ref: str | None = None,
    overrides: Sequence[str] = (),
    connector: str | None = None,
    job_name: str = "warpstore",
    output: str | None = None,
    directives: dict[str, Any] | None = None,
    extra_directives: Sequence[str] = (),
    python_env: PythonEnv | None = None,
    dependency: str | None = None,
    mail_user: str | None = None,
    mail_type: str | None = None,
) -> str:
    """Fill the site's template. ``site`` already has nodes/walltime/account/queue applied."""
    if site.scheduler not in TEMPLATES:
        raise SiteConfigError(
            f"site {site.name!r} has no scheduler (scheduler: {site.scheduler}); run "
            f"`warpstore launch --site {site.name} -- CMD` directly instead of rendering a script"
        )
    if not command:
        raise SiteConfigError("no command to run: add it after --, e.g. -- python workflow.py")
    if connector is not None and connector not in CONNECTORS:
        raise SiteConfigError(
            f"unknown connector {connector!r}; choose from {', '.join(CONNECTORS)}"
        )
    scheduler = site.scheduler
    known = DIRECTIVE_NAMES[scheduler]
    for name in directives or {}:
        if name not in known:
            raise SiteConfigError(
                f"--directive {name}=...: no built-in directive {name!r} for {scheduler} "
                f"(built-in: {', '.join(known)}); to add one verbatim, give it as it appears "
                f"after #{'PBS' if scheduler == 'pbs' else 'SBATCH'}, e.g. "
                f"--directive '{'-l storage=gpfs' if scheduler == 'pbs' else '--gres=gpu:2'}'"
            )
    walltime = validate_walltime(site["walltime"])
    seconds = parse_walltime(walltime)
    queue_was_given = bool(site.get(site.get("queue_key", "queue")))
    queue = choose_queue(site)
    check_job(site, connector)
    env = python_env or resolve_python_env(site.get("python_env"), "python_env", check=False)

    kind = connector or site["connector"]["type"]
    lead = min(int(site.get("early_signal", 120)), seconds // 2)  # short test jobs: half
    memory = None
    if site.get("memory_per_node"):
        try:
            mib = parse_size(str(site["memory_per_node"])) // (1 << 20)
        except ValueError as e:
            raise SiteConfigError(f"{site.source}: key 'memory_per_node': {e}") from None
        memory = f"{mib}M" if scheduler == "slurm" else f"{mib}mb"

    select = str(site["nodes"]) + (f":{site['select']}" if site.get("select") else "")
    gpus = int(site.get("gpus_per_node") or 0) if site.get("request_gpus", True) else 0
    if scheduler == "pbs" and gpus and "ngpus=" not in select:
        select += f":ngpus={site['gpus_per_node']}"
    if scheduler == "pbs" and memory and "mem=" not in select:
        select += f":mem={memory}"
    place = site.get("place")
    if scheduler == "pbs" and site.get("exclusive"):
        place = f"{place or 'scatter'}:excl" if "excl" not in str(place or "") else place

    timer, timer_note = "", ""
    if scheduler == "pbs" and lead > 0:
        # PBS has no directive for an early signal: at the limit it sends SIGTERM to every
        # process of the job, then SIGKILL after the server's kill_delay. So the script
        # arms its own: a watcher sends SIGTERM to the launcher (which replaced the shell,
        # so it is $$) `lead` seconds before the walltime, unless the launcher is gone by
        # then (`tail --pid` returns when it ends; so no process outlives the job). The
        # watcher forwards nothing, so a qdel's SIGTERM reaches the launcher only once.
        timer = (
            f"( if ! timeout {seconds - lead} tail -s 0.2 --pid=$$ -f /dev/null; then "
            "kill -TERM $$; fi ) >/dev/null 2>&1 &"
        )
        timer_note = (
            f"SIGTERM to the launcher {lead} s before the walltime ({walltime}), so that it "
            "stops the servers and writes the report before PBS kills the job:"
        )

    python = env.python
    template = _environment().get_template(TEMPLATES[scheduler])
    return template.render(
        site=site.data,
        nodes=site["nodes"],
        walltime=format_walltime(seconds, scheduler),
        job_name=job_name,
        output=output,
        directives={**site.get("directives", {}), **(directives or {})},
        extra_directives=list(extra_directives),
        version=__version__,
        queue_note=(
            f"queue {queue} picked for {site['nodes']} nodes, {walltime}"
            if queue and not queue_was_given
            else ""
        ),
        python_env=env.describe(),
        activate=env.activate,
        select=select,
        gpus=gpus,
        place=place,
        memory=memory,
        signal_lead=lead if scheduler == "slurm" and lead > 0 else 0,
        needs_vni=bool(site.get("slingshot")) and _needs_vni(site, kind),
        dependency=_dependency(dependency),
        mail_user=mail_user,
        mail_type=_mail_type(mail_type, scheduler),
        timer=timer,
        timer_note=timer_note,
        launch_command=launch_command(
            site_ref or site.name, command, connector=connector, overrides=overrides, python=python
        ),
    )
