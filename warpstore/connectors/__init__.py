"""Connectors: the low-level byte stores behind a :class:`~warpstore.store.Store`.

One module per connector (``warpstore.connectors.<name>.<Name>Connector``),
all behind the :class:`~warpstore.connectors.protocols.Connector` Protocol.
"""

from warpstore.connectors.protocols import Connector, DeferrableConnector

__all__ = ["Connector", "DeferrableConnector"]
