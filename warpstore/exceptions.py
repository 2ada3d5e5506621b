"""Errors raised by warpstore.

They live in one module so that callers can catch a warpstore failure without
importing the connector or transport that raised it (the store never knows which
connector it talks to, and neither should the code handling its errors).
"""

from __future__ import annotations

from typing import Any


class WarpstoreError(Exception):
    """Base class of every error raised on purpose by warpstore."""


class UserError(WarpstoreError):
    """A mistake the user can fix (a command, an option, a missing program or service).

    The command line prints its message as one line, ``warpstore: error: ...``,
    with no traceback (``--debug`` or ``WARPSTORE_DEBUG=1`` shows it), and
    exits with :attr:`exit_code`: 1 by default, 126/127 where a shell would
    (a command that is not executable / not found).
    """

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SerializationError(WarpstoreError):
    """An object could not be turned into bytes, or bytes back into an object."""


class ProxyResolveError(WarpstoreError):
    """A proxy's factory failed; the proxy stays unresolved and may be retried.

    The message names the store, the key and the cause so that a failure deep
    inside a workflow task can be traced back to where the object was supposed
    to come from.
    """

    def __init__(
        self,
        message: str,
        cause: BaseException | None = None,
        *,
        store: str | None = None,
        key: Any = None,
    ) -> None:
        super().__init__(message)
        self._cause = cause
        self.store = store
        self.key = key

    @property
    def cause(self) -> BaseException | None:
        """The error that stopped the factory (the original's attribute name).

        Falls back to ``__cause__`` for errors raised ``from`` another one.
        """
        return self._cause if self._cause is not None else self.__cause__

    @cause.setter
    def cause(self, value: BaseException | None) -> None:
        self._cause = value


class ConnectorError(WarpstoreError):
    """A connector could not complete an operation against its backend."""


class ConnectorConnectionError(ConnectorError, ConnectionError):
    """The backend (a server, Redis, a file system) could not be reached."""


class StoreFullError(ConnectorError):
    """A put was refused because the backend has no room; nothing stored was lost."""


class AuthenticationError(ConnectorError):
    """A request or reply failed authentication."""


class StoreExistsError(WarpstoreError):
    """A store of the same name is already registered in this process."""
