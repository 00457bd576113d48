"""``python -m parallelize.testing``: run the local test server."""

from ._server import main

main()
