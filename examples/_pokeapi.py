"""A small stand-in for https://pokeapi.co, for the examples that follow the article.

There is no internet here, so :func:`pokeapi_server` serves the two routes the
article's scripts use, with the same JSON shapes, on 127.0.0.1 in the caller's event
loop, each answer delayed like a remote API's (between half and one and a half times
``delay``, at random, so that answers overtake each other):

    ``/api/v2/pokemon?limit=N``  ``{"count": ..., "results": [{"name": ..., "url": ...}]}``,
                                 the first N pokemon
    ``/api/v2/pokemon/{id}/``    ``{"id": ..., "name": ..., "height": ..., "weight": ...}``

Not an example itself: ``parallel_fetch.py`` and ``pipeline.py`` import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

from aiohttp import web

# The first pokemon of the real API, as the article prints them; the rest are made up.
STARTERS = [
    ("bulbasaur", 7, 69),
    ("ivysaur", 10, 130),
    ("venusaur", 20, 1000),
    ("charmander", 6, 85),
    ("charmeleon", 11, 190),
    ("charizard", 17, 905),
    ("squirtle", 5, 90),
    ("wartortle", 10, 225),
    ("blastoise", 16, 855),
]


def pokemon(number: int) -> dict[str, int | str]:
    """The details of pokemon ``number`` (1-based), as ``/api/v2/pokemon/{id}/`` has them."""
    if number <= len(STARTERS):
        name, height, weight = STARTERS[number - 1]
    else:
        name, height, weight = f"pokemon-{number}", 3 + number % 20, 10 * number
    return {"id": number, "name": name, "height": height, "weight": weight}


def make_app(count: int, delay: float) -> web.Application:
    """An application that knows ``count`` pokemon and answers ``delay`` s late on average."""

    async def answer_late() -> None:
        await asyncio.sleep(random.uniform(0.5 * delay, 1.5 * delay))

    async def pokemon_list(request: web.Request) -> web.Response:
        await answer_late()
        limit = min(int(request.query.get("limit", "20")), count)
        base = f"{request.scheme}://{request.host}/api/v2/pokemon"
        results = [{"name": pokemon(n)["name"], "url": f"{base}/{n}/"} for n in range(1, limit + 1)]
        return web.json_response({"count": count, "results": results})

    async def pokemon_details(request: web.Request) -> web.Response:
        await answer_late()
        number = int(request.match_info["number"])
        if not 1 <= number <= count:
            raise web.HTTPNotFound
        return web.json_response(pokemon(number))

    app = web.Application()
    app.router.add_get("/api/v2/pokemon", pokemon_list)
    app.router.add_get(r"/api/v2/pokemon/{number:\d+}/", pokemon_details)
    return app


@contextlib.asynccontextmanager
async def pokeapi_server(count: int, delay: float) -> AsyncIterator[str]:
    """Serve :func:`make_app` on 127.0.0.1 (a free port); yield the list's URL."""
    runner = web.AppRunner(make_app(count, delay), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/api/v2/pokemon"
    finally:
        await runner.cleanup()
