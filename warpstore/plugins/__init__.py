"""Integrations with workflow frameworks (the original's ``proxystore_ex.plugins``).

- :mod:`warpstore.plugins.distributed`: a Dask distributed ``Client`` that
  passes large task arguments and results by proxy.
- :mod:`warpstore.plugins.parsl`: a Parsl serializer that does the same for
  app arguments and results.
"""
