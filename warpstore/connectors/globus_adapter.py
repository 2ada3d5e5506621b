"""The only module that calls globus-sdk: login, transfers, deletes, task status.

Globus's services are not reachable from every machine (not from the test
machines): everything warpstore needs is this small surface, and tests run
the connector and the CLI on a double of it (``tests/globus_double.py``).

Tokens live in ``$WARPSTORE_GLOBUS_TOKENS`` (default
``~/.local/share/warpstore/globus-tokens.json``), mode 0600, written by
``warpstore globus login`` and removed by ``warpstore globus logout``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from warpstore.exceptions import ConnectorError

__all__ = ["ADAPTER_FACTORY", "GlobusAdapter", "make_adapter", "token_file"]

TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"


def token_file() -> Path:
    default = Path.home() / ".local" / "share" / "warpstore" / "globus-tokens.json"
    return Path(os.environ.get("WARPSTORE_GLOBUS_TOKENS", str(default)))


def client_id(explicit: str | None = None) -> str:
    """The Globus native-app client id: given, ``$WARPSTORE_GLOBUS_CLIENT_ID``, or saved."""
    found = explicit or os.environ.get("WARPSTORE_GLOBUS_CLIENT_ID")
    if not found:
        try:
            found = json.loads(token_file().read_text()).get("client_id")
        except (FileNotFoundError, ValueError):
            found = None
    if not found:
        raise ConnectorError(
            "no Globus client id: register a native app at "
            "https://app.globus.org/settings/developers (no secret needed) and give its id "
            "with --client-id or WARPSTORE_GLOBUS_CLIENT_ID"
        )
    return found


def _sdk() -> Any:
    try:
        import globus_sdk
    except ImportError as e:
        raise ConnectorError(
            f"the Globus connector needs globus-sdk: pip install 'warpstore[globus]' ({e})"
        ) from e
    return globus_sdk


class GlobusAdapter:
    """Login flow and a TransferClient, reduced to what the connector uses."""

    def __init__(self, client: str | None = None) -> None:
        self._sdk = _sdk()
        self.client_id = client_id(client)
        self._auth = self._sdk.NativeAppAuthClient(self.client_id)
        self._client: Any = None

    # -- login -------------------------------------------------------------------

    def authorize_url(self) -> str:
        self._auth.oauth2_start_flow(requested_scopes=TRANSFER_SCOPE, refresh_tokens=True)
        return str(self._auth.oauth2_get_authorize_url())

    def exchange_code(self, code: str) -> dict[str, Any]:
        response = self._auth.oauth2_exchange_code_for_tokens(code)
        tokens: dict[str, Any] = response.by_resource_server["transfer.api.globus.org"]
        return tokens

    def revoke(self, tokens: dict[str, Any]) -> None:
        for name in ("access_token", "refresh_token"):
            if tokens.get(name):
                self._auth.oauth2_revoke_token(tokens[name])

    # -- transfers ---------------------------------------------------------------

    def _transfer(self) -> Any:
        if self._client is None:
            path = token_file()
            try:
                tokens = json.loads(path.read_text())
            except FileNotFoundError:
                raise ConnectorError(
                    f"not logged in to Globus (no {path}): run `warpstore globus login`"
                ) from None
            authorizer = self._sdk.RefreshTokenAuthorizer(
                tokens["refresh_token"],
                self._auth,
                access_token=tokens.get("access_token"),
                expires_at=tokens.get("expires_at_seconds"),
            )
            self._client = self._sdk.TransferClient(authorizer=authorizer)
        return self._client

    def submit_transfer(
        self, source: str, destination: str, items: Sequence[tuple[str, str]], label: str
    ) -> str:
        client = self._transfer()
        data = self._sdk.TransferData(
            source_endpoint=source, destination_endpoint=destination, label=label, sync_level=None
        )
        for src, dst in items:
            data.add_item(src, dst)
        return str(client.submit_transfer(data)["task_id"])

    def submit_delete(self, endpoint: str, paths: Sequence[str], label: str) -> str:
        client = self._transfer()
        data = self._sdk.DeleteData(endpoint=endpoint, label=label, ignore_missing=True)
        for path in paths:
            data.add_item(path)
        return str(client.submit_delete(data)["task_id"])

    def task_status(self, task_id: str) -> tuple[str, str]:
        """(status, detail): status is ACTIVE, INACTIVE, SUCCEEDED or FAILED."""
        task = self._transfer().get_task(task_id)
        return str(task["status"]), str(task.get("nice_status") or "")


ADAPTER_FACTORY: Callable[..., Any] = GlobusAdapter


def make_adapter(client: str | None = None) -> Any:
    return ADAPTER_FACTORY(client)
