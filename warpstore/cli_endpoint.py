"""``warpstore endpoint configure|start|stop|list|check`` and ``warpstore relay``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from warpstore.endpoint.config import EndpointConfig, endpoint_dir, list_endpoints, load_config


def _fail(message: str) -> None:
    click.echo(f"warpstore: {message}", err=True)
    sys.exit(1)


def _pid(config: EndpointConfig) -> int | None:
    from warpstore.server.runtime import pid_alive

    try:
        pid = int((config.directory / "endpoint.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


@click.group("endpoint")
def endpoint() -> None:
    """Peer-to-peer endpoints that move objects between sites."""


@endpoint.command("configure")
@click.argument("name")
@click.option("--relay-server", default=None, help="ws:// or wss:// address of the relay.")
@click.option(
    "--relay-token-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="File with the relay's shared token (needed with --relay-server).",
)
@click.option("--persist/--no-persist", default=False, help="Keep objects on disk across restarts.")
@click.option(
    "--address",
    "addresses",
    multiple=True,
    help="Host address for peer connections (repeatable; default: every non-loopback one).",
)
@click.option(
    "--peer-timeout",
    type=click.FloatRange(min=0, min_open=True, max=24 * 3600),
    default=None,
    help="Seconds to wait for another endpoint (connection and reply)  [default: kept, or 60]",
)
def configure(
    name: str,
    relay_server: str | None,
    relay_token_file: str | None,
    persist: bool,
    addresses: tuple[str, ...],
    peer_timeout: float | None,
) -> None:
    """Create (or update) endpoint NAME; its UUID stays the same."""
    if relay_server and not relay_server.startswith(("ws://", "wss://")):
        _fail(f"--relay-server {relay_server!r}: use a ws:// or wss:// address")
    if relay_server and not relay_token_file:
        _fail("--relay-server needs --relay-token-file (the relay's shared token)")
    if relay_token_file:
        from warpstore.server.runtime import read_token_file

        try:  # private, ours, no symlink: checked now rather than when the daemon starts
            read_token_file(relay_token_file)
        except OSError as e:
            _fail(f"--relay-token-file: {e}")
    try:
        try:
            config = load_config(name)
        except FileNotFoundError:
            config = EndpointConfig(name=name)
        config.relay_server = relay_server
        token = str(Path(relay_token_file).resolve()) if relay_token_file else None
        config.relay_token_file = token
        config.persist = persist
        config.addresses = list(addresses)
        if peer_timeout is not None:
            config.peer_timeout = peer_timeout
        config.save()
    except ValueError as e:
        _fail(str(e))
    click.echo(f"endpoint {name} {config.uuid} configured in {config.directory}")


@endpoint.command("start")
@click.argument("name")
@click.option("--timeout", type=float, default=30.0, show_default=True)
def start(name: str, timeout: float) -> None:
    """Start endpoint NAME as a daemon (pid and log in its directory)."""
    try:
        config = load_config(name)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if _pid(config) is not None:
        click.echo(f"endpoint {name} is already running (pid {_pid(config)})")
        return
    log = config.directory / "endpoint.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "warpstore", "endpoint", "run", name],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    sock = config.directory / "endpoint.sock"
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
            _fail(f"endpoint {name} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            proc.terminate()
            _fail(f"endpoint {name} not ready after {timeout:g} s (see {log})")
        time.sleep(0.05)
    click.echo(f"endpoint {name} {config.uuid} started (pid {proc.pid}, log {log})")


@endpoint.command("run", hidden=True)
@click.argument("name")
def run(name: str) -> None:
    """Run endpoint NAME in the foreground (what `start` runs)."""
    from warpstore.endpoint.daemon import run_endpoint

    sys.exit(run_endpoint(load_config(name)))


@endpoint.command("stop")
@click.argument("name")
def stop(name: str) -> None:
    """Stop endpoint NAME (SIGTERM, then SIGKILL after 10 s)."""
    from warpstore.server.runtime import pid_alive

    config = load_config(name)
    pid = _pid(config)
    if pid is None:
        click.echo(f"endpoint {name} is not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    click.echo(f"endpoint {name} stopped")


@endpoint.command("list")
def list_cmd() -> None:
    """Every configured endpoint, and whether it runs."""
    for config in list_endpoints():
        pid = _pid(config)
        state = f"running (pid {pid})" if pid else "stopped"
        click.echo(f"{config.name:<16} {config.uuid}  {state:<20} relay {config.relay_server}")


@endpoint.command("check")
@click.argument("name")
def check(name: str) -> None:
    """Ask endpoint NAME whether it answers and is on its relay."""
    from warpstore.endpoint.client import EndpointClient
    from warpstore.exceptions import ConnectorError
    from warpstore.units import plural

    config = load_config(name)
    client = EndpointClient(endpoint_dir(name) / "endpoint.sock", timeout=10)
    try:
        reply, _ = client.request({"op": "ping"})
    except ConnectorError as e:
        _fail(str(e))
    finally:
        client.close()
    relay = "connected to " + str(config.relay_server) if reply["relay"] else "no relay"
    click.echo(
        f"endpoint {name} {reply['uuid']}: answering (pid {reply['pid']}), {relay}, "
        f"{plural(reply['objects'], 'object')}"
    )


@click.command("relay")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8700, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="Shared token that endpoints must prove they hold.",
)
def relay(host: str, port: int, token_file: str) -> None:
    """Run the relay that introduces endpoints (signalling only; no data passes through)."""
    from warpstore.endpoint.relay import run_relay
    from warpstore.server.runtime import read_token_file

    try:  # a symlink, another user's file or one others can read is refused
        token = read_token_file(token_file)
    except OSError as e:
        raise click.ClickException(str(e)) from None
    run_relay(token, host, port)
