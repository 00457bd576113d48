"""Helpers for testing, benchmarking and demonstrating code that uses parallelize.

``local_server()`` runs a small aiohttp application on 127.0.0.1 so that HTTP work
can be exercised without the internet. It needs the ``http`` extra
(``pip install "parallelize[http]"``).
"""

from ._server import Capacity, ServerStats, local_server, make_app, page_urls

__all__ = ("Capacity", "ServerStats", "local_server", "make_app", "page_urls")
