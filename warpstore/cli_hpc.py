"""``warpstore site|render|submit|status|cancel|launch``: the HPC bundle's commands."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import click

from warpstore.hpc.siteconfig import CONNECTORS, SiteConfig, SiteConfigError, load_site

_F = Callable[..., Any]


def _fail(message: str) -> None:
    click.echo(f"warpstore: {message}", err=True)
    sys.exit(1)


def _make_executable(path: str) -> None:
    """chmod +x a script we wrote; never a device such as /dev/stdout or /dev/null."""
    import stat

    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        os.chmod(path, mode | 0o111)


@click.group("site")
def site() -> None:
    """List and show site configs."""


@site.command("list")
def site_list() -> None:
    """The sites warpstore knows."""
    from warpstore.hpc.siteconfig import list_sites

    for name in list_sites():
        cfg = load_site(name)
        click.echo(f"{name:<15} {cfg.scheduler:<6} {cfg.get('description', '')}")


@site.command("show")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def site_show(name: str, overrides: tuple[str, ...]) -> None:
    """Print a site config (after overrides) as YAML."""
    try:
        cfg = load_site(name, overrides)
    except SiteConfigError as e:
        _fail(str(e))
    click.echo(f"# {cfg.source}")
    click.echo(cfg.to_yaml(), nl=False)


def _job_options(f: _F) -> _F:
    options = [
        click.option(
            "--site",
            "site_name",
            default="local",
            show_default=True,
            help="Site name or path of a site YAML file.",
        ),
        click.option("--nodes", type=int, default=None, help="Number of nodes."),
        click.option("--walltime", default=None, help="HH:MM:SS."),
        click.option("--account", "-A", default=None, help="Project/allocation."),
        click.option("--queue", "-q", default=None, help="Queue (PBS) or partition (Slurm)."),
        click.option(
            "--connector",
            type=click.Choice(CONNECTORS),
            default=None,
            help="Connector for the job (default: the site's).",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a site key (dotted for nested keys).",
        ),
        click.option(
            "--directive",
            "directives",
            multiple=True,
            metavar="NAME=VALUE",
            help="Replace a built-in directive (NAME= with no value skips it).",
        ),
        click.option("--job-name", default="warpstore", show_default=True),
        click.argument("command", nargs=-1, required=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _render(
    site_name: str,
    nodes: int | None,
    walltime: str | None,
    account: str | None,
    queue: str | None,
    connector: str | None,
    overrides: tuple[str, ...],
    directives: tuple[str, ...],
    job_name: str,
    command: tuple[str, ...],
) -> tuple[SiteConfig, str]:
    from warpstore.hpc.render import render_job_script

    parsed: dict[str, Any] = {}
    for item in directives:
        name, sep, value = item.partition("=")
        if not sep:
            raise SiteConfigError(f"--directive {item!r}: use NAME=VALUE (NAME= to skip)")
        parsed[name] = value or None
    values = {"nodes": nodes, "walltime": walltime, "account": account, "queue": queue}
    cfg = load_site(site_name, overrides, values)
    text = render_job_script(
        cfg,
        list(command),
        site_ref=site_name,
        overrides=overrides,
        connector=connector,
        job_name=job_name,
        directives=parsed,
    )
    return cfg, text


@click.command("render")
@_job_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the script here instead of printing it.",
)
def render(output: str | None, **kwargs: Any) -> None:
    """Render a batch script for a site: directives, modules, then `warpstore launch -- CMD`."""
    try:
        _, text = _render(**kwargs)
    except SiteConfigError as e:
        _fail(str(e))
    if output:
        with open(output, "w") as f:
            f.write(text)
        _make_executable(output)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@click.command("submit")
@_job_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to keep the rendered script (default: ./<job-name>.pbs or .sh).",
)
def submit(output: str | None, **kwargs: Any) -> None:
    """Render the script and submit it with qsub/sbatch; print the job id."""
    from warpstore.hpc.scheduler import SchedulerError
    from warpstore.hpc.scheduler import submit as do_submit

    try:
        cfg, text = _render(**kwargs)
    except SiteConfigError as e:
        _fail(str(e))
    path = output or f"{kwargs['job_name']}.{'pbs' if cfg.scheduler == 'pbs' else 'sh'}"
    with open(path, "w") as f:
        f.write(text)
    _make_executable(path)
    try:
        job_id = do_submit(cfg.scheduler, path)
    except SchedulerError as e:
        _fail(str(e))
    click.echo(job_id)


def _guess_scheduler(scheduler: str | None, job_id: str = "") -> str:
    if scheduler:
        return scheduler
    if "." in job_id and shutil.which("qstat"):
        return "pbs"  # PBS ids are NNN.server; Slurm ids are numbers
    if shutil.which("sbatch"):
        return "slurm"
    if shutil.which("qsub"):
        return "pbs"
    _fail("no scheduler commands (sbatch, qsub) on PATH; give --scheduler")
    raise AssertionError


@click.command("status")
@click.argument("job_id")
@click.option("--scheduler", type=click.Choice(["pbs", "slurm"]), default=None)
def status(job_id: str, scheduler: str | None) -> None:
    """State of a job (qstat -x / sacct, falling back to squeue)."""
    from warpstore.hpc.scheduler import SchedulerError, job_state

    try:
        st = job_state(_guess_scheduler(scheduler, job_id), job_id)
    except SchedulerError as e:
        _fail(str(e))
    code = "" if st.exit_code is None else f" exit {st.exit_code}"
    click.echo(f"{st.job_id} {st.state}{code} ({st.source})")
    if st.state == "UNKNOWN":
        sys.exit(3)  # never let "the scheduler does not know it" read as success


@click.command("cancel")
@click.argument("job_id")
@click.option("--scheduler", type=click.Choice(["pbs", "slurm"]), default=None)
def cancel(job_id: str, scheduler: str | None) -> None:
    """Cancel a job (qdel / scancel)."""
    from warpstore.hpc.scheduler import SchedulerError
    from warpstore.hpc.scheduler import cancel as do_cancel

    try:
        do_cancel(_guess_scheduler(scheduler, job_id), job_id)
    except SchedulerError as e:
        _fail(str(e))
    click.echo(f"cancelled {job_id}")


@click.command("launch", context_settings={"ignore_unknown_options": True})
@click.option(
    "--site",
    "site_name",
    default=None,
    help="Site name or YAML path (default: $WARPSTORE_SITE or local).",
)
@click.option("--connector", type=click.Choice(CONNECTORS), default=None)
@click.option(
    "--nodes", type=int, default=None, help="Nodes to start servers on (default: the allocation's)."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def launch(
    site_name: str | None,
    connector: str | None,
    nodes: int | None,
    overrides: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Start a server per node, run CMD, stop the servers, write a report."""
    from warpstore.hpc.launcher import launch as do_launch

    logging.basicConfig(
        level=os.environ.get("WARPSTORE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # errors (a site, a missing program, servers that fail) end as one line: cli_errors
    cfg = load_site(site_name or os.environ.get("WARPSTORE_SITE", "local"), overrides)
    sys.exit(do_launch(cfg, list(command), connector=connector, nodes=nodes))


COMMANDS = [site, render, submit, status, cancel, launch]
