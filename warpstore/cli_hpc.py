"""``warpstore site|render|submit|status|cancel|launch``: the HPC bundle's commands."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from warpstore.hpc.scheduler import SchedulerError, record_job, scheduler_for_job
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


@site.command("queues")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def site_queues(name: str, overrides: tuple[str, ...]) -> None:
    """The site's queues: nodes, walltime limit, purpose; * marks those picked by default."""
    try:
        cfg = load_site(name, overrides)
    except SiteConfigError as e:
        _fail(str(e))
    queues = cfg.get("queues", {})
    if not queues:
        click.echo(f"site {cfg.name!r} has no queue table: give --queue if the site needs one")
        return
    click.echo(f"# {cfg.get('docs') or cfg.source}")
    for qname, queue in queues.items():
        low, high = queue["nodes"]
        limits = queue.get("limits")
        limit = (
            ", ".join(f"{x['walltime']} ({x['nodes'][0]}-{x['nodes'][1]})" for x in limits)
            if limits
            else queue["walltime"]
        )
        mark = "*" if queue.get("auto", True) else " "
        click.echo(
            f"{mark} {qname:<15} {low:>5}-{high:<6} {limit:<24} {queue.get('purpose', '')}"
        )


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
        click.option(
            "--walltime",
            default=None,
            help="90 (minutes), 30:00, 01:30:00, 1-00:00:00, 90m or 1h30m.",
        ),
        click.option("--account", "-A", default=None, help="Project/allocation."),
        click.option(
            "--queue",
            "-q",
            default=None,
            help="Queue (PBS), partition (Slurm) or QOS (Perlmutter); default: the first of "
            "the site's queues that fits the nodes and walltime.",
        ),
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
            metavar="NAME=VALUE|-OPTION",
            help="Replace a built-in directive (NAME= skips it), or add one verbatim when it "
            "starts with '-' (--directive '--gres=gpu:2', --directive '-l storage=gpfs').",
        ),
        click.option(
            "--python-env",
            default=None,
            metavar="auto|none|PATH|conda:ENV",
            help="Python environment the job activates (default: the site's python_env, "
            "else the one running this command).",
        ),
        click.option(
            "--dependency",
            default=None,
            metavar="[TYPE:]JOBID",
            help="Start after another job: JOBID (afterok) or afterany:JOBID ...",
        ),
        click.option("--mail-user", default=None, help="Where the scheduler sends mail."),
        click.option(
            "--mail-type",
            default=None,
            metavar="BEGIN,END,FAIL|ALL|NONE",
            help="When the scheduler sends mail.",
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
    python_env: str | None = None,
    dependency: str | None = None,
    mail_user: str | None = None,
    mail_type: str | None = None,
) -> tuple[SiteConfig, str]:
    from warpstore.hpc.pyenv import PythonEnvError, resolve_python_env
    from warpstore.hpc.render import render_job_script

    parsed: dict[str, Any] = {}
    verbatim: list[str] = []
    for item in directives:
        if item.startswith("-"):
            verbatim.append(item)  # an option as it appears after #PBS/#SBATCH
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise SiteConfigError(
                f"--directive {item!r}: use NAME=VALUE to replace a built-in directive "
                "(NAME= to skip it), or give the option itself, e.g. --directive '--gres=gpu:2'"
            )
        parsed[name] = value or None
    values = {"nodes": nodes, "walltime": walltime, "account": account, "queue": queue}
    cfg = load_site(site_name, overrides, values)
    source = "--python-env" if python_env else f"{cfg.source}: key 'python_env'"
    try:
        env = resolve_python_env(python_env or cfg.get("python_env"), source)
    except PythonEnvError as e:
        raise SiteConfigError(str(e)) from None
    for warning in env.warnings:
        click.echo(f"warpstore: warning: {warning}", err=True)
    text = render_job_script(
        cfg,
        list(command),
        site_ref=site_name,
        overrides=overrides,
        connector=connector,
        job_name=job_name,
        directives=parsed,
        extra_directives=verbatim,
        python_env=env,
        dependency=dependency,
        mail_user=mail_user,
        mail_type=mail_type,
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
    record_job(job_id, cfg.scheduler, cfg.name, os.path.abspath(path))
    click.echo(job_id)


def _guess_scheduler(scheduler: str | None, job_id: str = "") -> str:
    """--scheduler, else the scheduler `submit` recorded for this job, else the id's form."""
    if scheduler:
        return scheduler
    try:
        return scheduler_for_job(job_id)
    except SchedulerError as e:
        _fail(str(e))
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
    if nodes is not None and nodes < 1:  # as render says it (siteconfig's nodes check)
        raise SiteConfigError(f"--nodes: must be at least 1, got {nodes}")
    cfg = load_site(site_name or os.environ.get("WARPSTORE_SITE", "local"), overrides)
    sys.exit(do_launch(cfg, list(command), connector=connector, nodes=nodes))


COMMANDS = [site, render, submit, status, cancel, launch]
