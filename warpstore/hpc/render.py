"""Render a site's batch script from its Jinja2 template."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

import jinja2

from warpstore import __version__
from warpstore.hpc.data import data_dir
from warpstore.hpc.siteconfig import CONNECTORS, SiteConfig, SiteConfigError, validate_walltime

__all__ = ["TEMPLATES", "launch_command", "render_job_script"]

TEMPLATES = {"pbs": "pbs/job.pbs.j2", "slurm": "slurm/job.sh.j2"}


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
) -> str:
    """The ``warpstore launch`` line a job script runs."""
    parts = ["warpstore", "launch", "--site", site]
    if connector:
        parts += ["--connector", connector]
    for item in overrides:
        parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in [*parts, "--", *command])


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
    validate_walltime(site["walltime"])
    if site.name in ("polaris", "aurora"):
        missing = [k for k in ("account", "filesystems") if not site.get(k)]
        if missing:
            raise SiteConfigError(
                f"site {site.name!r} requires {' and '.join(missing)}: give --account "
                "(your project) and keep or set filesystems (e.g. --set filesystems=home:eagle)"
            )
    template = _environment().get_template(TEMPLATES[site.scheduler])
    text = template.render(
        site=site.data,
        nodes=site["nodes"],
        walltime=site["walltime"],
        job_name=job_name,
        output=output,
        directives={**site.get("directives", {}), **(directives or {})},
        version=__version__,
        launch_command=launch_command(
            site_ref or site.name, command, connector=connector, overrides=overrides
        ),
    )
    return text
