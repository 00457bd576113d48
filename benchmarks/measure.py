"""One measurement, in a fresh process: run one contender on one workload once.

The harness (run.py) starts this script once per measurement and reads the
JSON object it prints as its last line of output. Run by hand, e.g.:

    .venv/bin/python benchmarks/measure.py parallelize --kind noop --n 200000 --workers 100

With --baseline it only imports the same modules and runs an empty coroutine
in the same kind of loop, so its peak RSS is the floor W3's growth is taken
above.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import resource
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from contenders import CONTENDERS, Contender
from workloads import Probe, action_for, lazy_items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contender", choices=sorted(CONTENDERS))
    parser.add_argument("--kind", choices=["noop", "sleep", "http"], default="noop")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--url", default=None)
    parser.add_argument("--baseline", action="store_true")
    return parser.parse_args(argv)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop  # noqa: PLC0415

        return uvloop.new_event_loop
    return None


def import_modules(contender: Contender, args: argparse.Namespace) -> None:
    """Import everything the measurement needs, so no import is timed."""
    for module in contender.modules:
        importlib.import_module(module)
    if args.kind == "http":
        importlib.import_module("aiohttp")


async def measure(contender: Contender, args: argparse.Namespace) -> dict[str, Any]:
    probe = Probe()
    async with action_for(
        args.kind, workers=args.workers, delay=args.delay, url=args.url, probe=probe
    ) as action:
        items = lazy_items(args.n)
        start = time.perf_counter()
        count, checksum = await contender.run(action, items, args.workers)
        elapsed = time.perf_counter() - start
    return {
        "elapsed": elapsed,
        "count": count,
        "checksum": checksum,
        "peak_inflight": probe.peak,
        "not_ok": probe.not_ok,
    }


async def idle() -> dict[str, Any]:
    await asyncio.sleep(0)
    return {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    contender = CONTENDERS[args.contender]
    try:
        import_modules(contender, args)
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            report = runner.run(idle() if args.baseline else measure(contender, args))
    except BaseException as exc:  # report every failure, keep the traceback on stderr
        traceback.print_exc()
        report = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    report["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report["python"] = sys.version.split()[0]
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
