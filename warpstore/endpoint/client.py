"""Talking to the local endpoint daemon over its Unix socket, synchronously."""

from __future__ import annotations

import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from warpstore.exceptions import ConnectorConnectionError, ConnectorError

__all__ = ["EndpointClient"]

_LEN = struct.Struct(">I")
_SIZE = struct.Struct(">Q")


class EndpointClient:
    """One connection to a local endpoint, shared by the threads of a process (locked)."""

    def __init__(self, socket_path: Path, timeout: float = 120.0) -> None:
        self.path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except OSError as e:
                sock.close()
                raise ConnectorConnectionError(
                    f"no endpoint answers at {self.path}: is it running? "
                    f"(`warpstore endpoint start NAME`): {e}"
                ) from e
            self._sock = sock
        return self._sock

    def _recv(self, sock: socket.socket, n: int) -> bytearray:
        buf = bytearray(n)  # returned as is: writable, so numpy can use it without a copy
        view, got = memoryview(buf), 0
        while got < n:
            k = sock.recv_into(view[got:])
            if not k:
                raise ConnectionError("the endpoint closed the connection")
            got += k
        return buf

    def request(
        self, header: dict[str, Any], data: Any = None
    ) -> tuple[dict[str, Any], bytearray]:
        with self._lock:
            sock = self._connect()
            try:
                raw = json.dumps(header).encode()
                sock.sendall(_LEN.pack(len(raw)) + raw)
                if header.get("op") == "put":
                    view = memoryview(data if data is not None else b"").cast("B")
                    sock.sendall(_SIZE.pack(view.nbytes))
                    sock.sendall(view)
                (n,) = _LEN.unpack(self._recv(sock, _LEN.size))
                reply: dict[str, Any] = json.loads(self._recv(sock, n))
                size = int(reply.get("size", 0)) if "size" in reply else 0
                payload = self._recv(sock, size)
            except TimeoutError:
                self.close()
                raise ConnectorConnectionError(
                    f"the endpoint at {self.path} did not answer {header.get('op')} within "
                    f"{self.timeout:g} s (the client's timeout: EndpointConnector(timeout=...))"
                ) from None
            except (OSError, ConnectionError) as e:
                self.close()
                raise ConnectorConnectionError(f"endpoint at {self.path}: {e}") from e
        if reply.get("status") == "error":
            raise ConnectorError(f"endpoint at {self.path}: {reply.get('message')}")
        return reply, payload

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
