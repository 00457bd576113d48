"""The article's slow-producer pipeline (``pokemon_pipeline.py``) with parallelize.

The article's producer hands out the pokemon's URLs slowly (10 ms each). Gathering
``[... async for pokemon in pokemons]`` waits for the last URL before the first
download starts; the article's fix is a queue, a producer task and a consumer task
that polls it. With parallelize the async generator *is* the input::

    parallelize(get_details, get_pokemons(...), 20).then(describe, 2)

The first stage reads ``get_pokemons()`` only as fast as its workers need items, so
each download starts as soon as its URL arrives, and the second stage (a plain
function, so it runs in threads) formats each pokemon as soon as it is downloaded.
The script prints, relative to its start, each URL handed out, each download started
and each result, then when the first result arrived and when the producer finished:
the first is well before the second.

There is no internet here, so the script serves a small "pokeapi" of its own on
127.0.0.1 (``_pokeapi.py``, the same routes and JSON, each answer about ``--delay``
seconds late)::

    python examples/pipeline.py --pokemon 100 --workers 20 --delay 0.03

:func:`pipeline` is the whole run; it returns the times for a caller to check.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from _pokeapi import pokeapi_server

from parallelize import parallelize


@dataclasses.dataclass
class Timeline:
    """What happened when, in seconds since the start; prints each event with its time."""

    started: float = dataclasses.field(default_factory=time.perf_counter)
    first_result: float | None = None
    producer_finished: float | None = None
    finished: float | None = None
    results: list[str] = dataclasses.field(default_factory=list)

    def now(self) -> float:
        return time.perf_counter() - self.started

    def say(self, message: str) -> None:
        print(f"{self.now():7.3f} s: {message}")


async def get_pokemons(
    session: aiohttp.ClientSession, list_url: str, timeline: Timeline
) -> AsyncIterator[dict[str, str]]:
    """The article's slow producer: the pokemon one by one, 10 ms apart."""
    async with session.get(list_url, params={"limit": 100_000}) as resp:
        resp.raise_for_status()
        pokemons = (await resp.json())["results"]
    for pokemon in pokemons:
        timeline.say(f"Get Url for Pokemon {pokemon['name']}")
        # This is a slow producer, so we have to sleep:
        await asyncio.sleep(0.01)
        yield pokemon
    timeline.producer_finished = timeline.now()
    timeline.say("The producer has handed out every URL")


async def get_details(
    session: aiohttp.ClientSession, timeline: Timeline, pokemon: dict[str, str]
) -> dict[str, Any]:
    """The first stage: download one pokemon's details."""
    timeline.say(f"Get information for `{pokemon['name']}`")
    async with session.get(pokemon["url"]) as resp:
        resp.raise_for_status()
        details: dict[str, Any] = await resp.json()
        return details


def describe(details: dict[str, Any]) -> str:
    """The second stage, a plain function (run in a thread): the article's line."""
    return (
        f"ID: {details['id']}, Name: {details['name']}, "
        f"Height: {details['height']}, Weight: {details['weight']}"
    )


async def pipeline(count: int, numworkers: int, delay: float) -> Timeline:
    """Run the two-stage pipeline over ``count`` pokemon; return what happened when."""
    timeline = Timeline()
    connector = aiohttp.TCPConnector(limit=numworkers)
    async with (
        pokeapi_server(count, delay) as list_url,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        pokemons = get_pokemons(session, list_url, timeline)
        download = functools.partial(get_details, session, timeline)
        lines = parallelize(download, pokemons, numworkers).then(describe, 2)
        async with lines:
            async for line in lines:
                if timeline.first_result is None:
                    timeline.first_result = timeline.now()
                timeline.say(line)
                timeline.results.append(line)
    timeline.finished = timeline.now()
    return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pokemon", type=int, default=100, help="pokemon in the API (100)")
    parser.add_argument("--workers", type=int, default=20, help="download workers (20)")
    parser.add_argument("--delay", type=float, default=0.03, help="mean seconds per answer (0.03)")
    args = parser.parse_args()

    timeline = asyncio.run(pipeline(args.pokemon, args.workers, args.delay))
    first, producer = timeline.first_result, timeline.producer_finished
    assert first is not None, "no pokemon at all"
    assert producer is not None, "the producer never finished"
    print(f"Finished program after {timeline.finished:.3f} s")
    print(f"first result at {first:.3f} s; producer finished at {producer:.3f} s")
    if first >= producer:
        sys.exit("the first result did not arrive before the producer finished")
    print(f"the first result arrived {producer - first:.3f} s before the producer finished")


if __name__ == "__main__":
    main()
