"""The ``warpstore`` command line (Click)."""

from __future__ import annotations

import os

import click

from warpstore import __version__
from warpstore.cli_errors import ErrorHandlingGroup


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="warpstore")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the traceback of an error (also WARPSTORE_DEBUG=1).",
)
def cli(debug: bool) -> None:
    """Move data between the tasks of HPC and distributed Python workflows by reference."""
    if debug:  # in the environment, so that what this command starts inherits it
        os.environ["WARPSTORE_DEBUG"] = "1"


@cli.command()
@click.option("--size-mib", default=8, show_default=True, help="Size of the demo array.")
@click.option(
    "--store-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Use a FileConnector in this directory (default: a temporary one).",
)
def demo(size_mib: int, store_dir: str | None) -> None:
    """Pass a numpy array between two processes by reference, on this machine, no server."""
    from warpstore.demo import run_demo

    run_demo(size_mib=size_mib, store_dir=store_dir, echo=click.echo)


from warpstore.cli_endpoint import endpoint, relay  # noqa: E402
from warpstore.cli_globus import globus  # noqa: E402
from warpstore.cli_hpc import COMMANDS  # noqa: E402
from warpstore.cli_server import server  # noqa: E402

cli.add_command(server)
cli.add_command(globus)
cli.add_command(endpoint)
cli.add_command(relay)
for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:  # pragma: no cover - console entry point
    cli()
