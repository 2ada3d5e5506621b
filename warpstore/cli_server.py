"""``warpstore server start|status|stop``: the node server by hand."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from warpstore.exceptions import UserError
from warpstore.units import format_size, parse_size


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


@click.group("server")
def server() -> None:
    """Start, inspect and stop this node's storage server."""


_transport = click.option(
    "--transport",
    type=click.Choice(["zmq", "ucx", "margo"]),
    default="zmq",
    show_default=True,
    help="Transport of the server.",
)
_runtime = click.option(
    "--runtime-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Root of the runtime files (default: $WARPSTORE_RUNTIME_DIR, "
    "$XDG_RUNTIME_DIR/warpstore or /tmp/warpstore-$USER).",
)
_token = click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the job's secret token (default: the job's own).",
)


@server.command("start")
@_transport
@click.option("--address", default=None, help="IP address to bind to.")
@click.option("--interface", default=None, help="Network interface to bind to (e.g. hsn0).")
@click.option("--port", type=int, default=None, help="Port (default: any free port).")
@_token
@click.option(
    "--memory-limit",
    callback=_size,
    default=None,
    help="Most bytes of objects to hold, e.g. 8GiB (default: no limit).",
)
@_runtime
@click.option(
    "--protocol",
    default=None,
    help="Margo only: Mercury protocol (tcp, ofi+tcp, ofi+verbs, cxi); default tcp.",
)
@click.option("--foreground", is_flag=True, help="Run here instead of as a detached process.")
def start(
    transport: str,
    address: str | None,
    interface: str | None,
    port: int | None,
    token_file: str | None,
    memory_limit: int | None,
    runtime_dir: str | None,
    protocol: str | None,
    foreground: bool,
) -> None:
    """Start this node's server (or report the one already running)."""
    if address and interface:
        raise click.UsageError("give --address or --interface, not both")
    if protocol and transport != "margo":
        raise click.UsageError("--protocol is for --transport margo")
    extra: dict[str, Any] = {"protocol": protocol} if transport == "margo" else {}
    if interface:  # here, in one line, rather than in a detached server's log
        from warpstore.server.runtime import default_address

        try:
            default_address(None, interface, transport)
        except (OSError, ValueError) as e:
            raise UserError(str(e)) from e
    if port:
        _check_port_free(transport, address, interface, port)
    if foreground:
        from warpstore.server.main import run_server

        try:
            run_server(
                transport,
                address=address,
                interface=interface,
                port=port,
                token_file=token_file,
                memory_limit=memory_limit,
                runtime_dir=runtime_dir,
                **extra,
            )
        except (OSError, RuntimeError, ValueError) as e:  # bind, "already running", options
            raise UserError(f"server: {e}") from e
        return
    connector = _connector(
        transport,
        address=address,
        interface=interface,
        port=port,
        token_file=token_file,
        memory_limit=memory_limit,
        runtime_dir=runtime_dir,
        **({"protocol": protocol or "tcp"} if transport == "margo" else {}),
    )
    info = connector.local_server()
    click.echo(
        f"{transport} server {info['address']} on node {info['node']} "
        f"(pid {info['pid']}, log {info.get('log')})"
    )
    connector.close()


def _check_port_free(transport: str, address: str | None, interface: str | None, port: int) -> None:
    """Refuse a busy ``--port`` here, in one line, not in a detached server's log."""
    import errno
    import socket

    from warpstore.server.runtime import default_address

    ip = default_address(address, interface, transport)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not busy
        try:
            probe.bind((ip, port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise UserError(f"cannot bind {ip}:{port}: {e.strerror}") from e
            raise UserError(
                f"port {port} on {ip} is already in use (another server? see `warpstore server "
                "status`); choose another --port, or leave it out to take any free one"
            ) from e


def _connector(transport: str, **kwargs: Any) -> Any:
    if transport == "margo":
        from warpstore.connectors.margo import MargoConnector

        return MargoConnector(**kwargs)
    if transport == "ucx":
        from warpstore.connectors.ucx import UCXConnector

        return UCXConnector(**kwargs)
    from warpstore.connectors.zmq import ZMQConnector

    return ZMQConnector(**kwargs)


def _running(transport: str, runtime_dir: str | None) -> dict[str, Any] | None:
    from warpstore.server.runtime import node_dir
    from warpstore.server.spawn import find_server

    try:
        return find_server(node_dir(transport, runtime_dir))
    except OSError as e:  # a runtime directory that is not safely ours: the one-line fix
        click.echo(f"warpstore server: {e}", err=True)
        sys.exit(1)


@server.command("status")
@_transport
@_runtime
@_token
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def status(transport: str, runtime_dir: str | None, token_file: str | None, as_json: bool) -> None:
    """Print address, objects, bytes held and requests served."""
    info = _running(transport, runtime_dir)
    if info is None:
        from warpstore.server.runtime import node_name

        click.echo(f"no {transport} server is running on node {node_name()}", err=True)
        sys.exit(1)
    connector = _connector(
        transport,
        token_file=token_file or info.get("token_file"),
        runtime_dir=runtime_dir,
        spawn=False,
        timeout=10,
    )
    try:
        st = connector.server_status(info["address"])
    finally:
        connector.close()
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    click.echo(f"address:   {st['address']}")
    click.echo(f"node:      {st['node']} (pid {st['pid']}, up {st['uptime_s']:.0f} s)")
    limit = "none" if st["memory_limit"] is None else format_size(st["memory_limit"])
    click.echo(f"objects:   {st['objects']}")
    click.echo(f"bytes:     {st['bytes']} ({format_size(st['bytes'])}, limit {limit})")
    click.echo(f"requests:  {st['requests_total']} {json.dumps(st['requests'])}")
    click.echo(f"errors:    {json.dumps(st['errors'])}")


@server.command("stop")
@_transport
@_runtime
@_token
def stop(transport: str, runtime_dir: str | None, token_file: str | None) -> None:
    """Stop this node's server (authenticated request, then SIGTERM if needed)."""
    from warpstore.server.protocol import Op
    from warpstore.server.spawn import stop_server

    info = _running(transport, runtime_dir)
    if info is None:
        click.echo(f"no {transport} server is running on this node")
        return
    connector = _connector(
        transport,
        token_file=token_file or info.get("token_file"),
        runtime_dir=runtime_dir,
        spawn=False,
        timeout=5,
    )

    def ask(i: dict[str, Any]) -> None:
        connector._client.request(i["address"], Op.SHUTDOWN)

    try:
        stopped = stop_server(info, ask)
    finally:
        connector.close()
    if not stopped:
        click.echo(f"server pid {info['pid']} did not stop", err=True)
        sys.exit(1)
    click.echo(f"stopped {transport} server {info['address']} (pid {info['pid']})")
