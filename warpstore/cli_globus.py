"""``warpstore globus login|logout``: the Globus token flow for the Globus connector."""

from __future__ import annotations

import json
import sys

import click

from warpstore.exceptions import ConnectorError


@click.group("globus")
def globus() -> None:
    """Log in to Globus (for GlobusConnector) or out again."""


@globus.command("login")
@click.option("--client-id", default=None, help="Your Globus native-app client id.")
def login(client_id: str | None) -> None:
    """Open the Globus login page, paste the code back; tokens are kept mode 0600."""
    from warpstore.connectors.globus_adapter import make_adapter, token_file

    try:
        adapter = make_adapter(client_id)
        click.echo("Log in to Globus at this address, then paste the code it shows:")
        click.echo(adapter.authorize_url())
        code = click.prompt("code", type=str).strip()
        tokens = adapter.exchange_code(code)
    except ConnectorError as e:
        click.echo(f"warpstore: {e}", err=True)
        sys.exit(1)
    except Exception as e:  # the SDK's own errors: bad code, network
        click.echo(f"warpstore: Globus login failed: {e}", err=True)
        sys.exit(1)
    from warpstore.server.runtime import write_json_atomic

    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json_atomic(path, {**tokens, "client_id": adapter.client_id})
    click.echo(f"logged in; tokens in {path} (mode 0600)")


@globus.command("logout")
def logout() -> None:
    """Revoke the stored tokens and delete them."""
    from warpstore.connectors.globus_adapter import make_adapter, token_file

    path = token_file()
    try:
        tokens = json.loads(path.read_text())
    except FileNotFoundError:
        click.echo("not logged in to Globus")
        return
    try:
        make_adapter(tokens.get("client_id")).revoke(tokens)
    except Exception as e:  # still remove the local copy
        click.echo(f"warpstore: could not revoke the tokens with Globus: {e}", err=True)
    path.unlink(missing_ok=True)
    click.echo(f"logged out; removed {path}")
