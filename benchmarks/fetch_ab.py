"""``parallelize fetch`` A/B: the main job's cost at two commits, and what options add.

    git worktree add /tmp/ab-ad9b36d ad9b36d          # the other tree, made by hand
    .venv/bin/python benchmarks/fetch_ab.py --trees old=/tmp/ab-ad9b36d,new=.
    .venv/bin/python benchmarks/fetch_ab.py --trees new=. --urls 2000 --rounds 3
    .venv/bin/python benchmarks/fetch_ab.py --trees old=/tmp/ab,new=. \\
        --variants 'plain=;new/unique=--unique' --start-runs 0
    git worktree remove --force /tmp/ab-ad9b36d

What it measures: ``python -m parallelize fetch URLS -w C --client pyreqwest -q -o
OUT [variant args]``, run as a fresh process (tree) per measurement with
``PYTHONPATH=<tree>/src`` put first, so that each source tree's code is imported
from this same venv (same Python, same pyreqwest); each tree is compiled first
(``compileall``) and the children run without PYTHONDONTWRITEBYTECODE, so no
measured run compiles. The server is benchmarks/fetch.py's: its own nginx, a child
of this script, ``worker_processes 1`` on 127.0.0.1, serving ``--urls`` seeded
files of 100 B to 64 KiB (about 1 in 500 up to 1 MiB), every one a 200.

``--trees NAME=PATH,...``: the source trees (default ``new=.``). ``--variants
NAME=ARGS;...``: the fetch options of each variant (shell words; empty: none); a
variant runs on every tree, or only on one as ``TREE/NAME=ARGS``. Default: ``plain``
on every tree, and on the last tree only ``unique`` (``--unique``), ``trace``
(``--fields timing,remote_address,redirects``: the client opened with tracing),
``headers`` (``--fields content_type,headers``) and ``format`` (``--format
'%{status} %{url}'``).

``--rounds`` interleaved, the order rotated each round, after one warm-up run of
each (off the clock). Per (tree, variant): the median and p25/p75 of the process
tree's CPU µs per request (``os.wait4``'s rusage: user + system of the process and
its reaped children, GNU time's ~1 ms included), the median wall seconds, nginx's CPU
µs per request over the same span, the peak RSS, and a check of every run: exit
0, one line per URL (JSON variants: every URL once, status 200 and its size; the
``--fields`` named present); then each difference against the first variant of
its row (HEAD plain), paired by round: the median of the per-round differences,
with p25/p75.

Then the one-URL start (``--start-runs``, 20 each, 0: skipped): ``python -m
parallelize fetch`` of one URL on each tree, and ``python -c pass`` as the floor,
interleaved; the tree's CPU ms and wall ms, and, from one ``-X importtime`` run per
tree, how many modules (and of them parallelize's) a fetch imports.

The table is printed; every raw sample goes to benchmarks/out/fetch_ab.json
(``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetch as fetch_bench  # noqa: E402
from _harness import (  # noqa: E402
    HERE,
    PROJECT_ROOT,
    child_env,
    fmt,
    load_average,
    machine,
    markdown,
    process_cpu,
    rotated,
    src_state,
    version_of,
)

OUT_DIR = HERE / "out"
DEFAULT_OPTION_VARIANTS: list[tuple[str, list[str]]] = [
    ("unique", ["--unique"]),
    ("trace", ["--fields", "timing,remote_address,redirects"]),
    ("headers", ["--fields", "content_type,headers"]),
    ("format", ["--format", "%{status} %{url}"]),
]

Contender = tuple[str, str]  # (tree name, variant name)


# --------------------------------------------------------------------------- #
# Arguments: trees and variants
# --------------------------------------------------------------------------- #


def parse_trees(text: str) -> dict[str, Path]:
    trees: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--trees: {item!r} is not NAME=PATH")
        if name in trees:
            raise ValueError(f"--trees: {name!r} twice")
        root = Path(path).resolve()
        if not (root / "src" / "parallelize" / "__init__.py").exists():
            raise ValueError(f"--trees: {root}/src/parallelize is not a package")
        trees[name] = root
    if not trees:
        raise ValueError("--trees: none given")
    return trees


def parse_variants(text: str | None, trees: list[str]) -> list[tuple[str, str, list[str]]]:
    """(tree, variant, fetch args) in the order given, each variant on every tree or
    only on the one named by ``TREE/NAME=ARGS``."""
    plan: list[tuple[str, str, list[str]]] = []
    if text is None:
        plan += [(tree, "plain", []) for tree in trees]
        return plan + [(trees[-1], name, args) for name, args in DEFAULT_OPTION_VARIANTS]
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, words = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--variants: {item!r} is not NAME=ARGS")
        only, slash, name = name.rpartition("/")
        if slash and only not in trees:
            raise ValueError(f"--variants: unknown tree {only!r} in {item!r}")
        args = shlex.split(words)
        plan += [(tree, name, args) for tree in ([only] if slash else trees)]
    if len({(tree, name) for tree, name, _ in plan}) != len(plan):
        raise ValueError("--variants: a (tree, variant) twice")
    return plan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trees", default="new=.", help="NAME=PATH,... (default new=.)")
    parser.add_argument("--variants", default=None, help="NAME=ARGS;... or TREE/NAME=ARGS")
    parser.add_argument("--urls", type=int, default=10_000, help="files served (10,000)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (20)")
    parser.add_argument("--concurrency", type=int, default=100, help="fetch -w (100)")
    parser.add_argument("--start-runs", type=int, default=20, help="one-URL runs each (20)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per run, s (300)")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "fetch_ab.json", help="raw JSON")
    args = parser.parse_args(argv)
    if args.urls < 1 or args.rounds < 1 or args.concurrency < 1 or args.start_runs < 0:
        parser.error("--urls, --rounds, --concurrency: at least 1; --start-runs: at least 0")
    try:
        args.tree_paths = parse_trees(args.trees)
        args.plan = parse_variants(args.variants, list(args.tree_paths))
    except ValueError as exc:
        parser.error(str(exc))
    return args


# --------------------------------------------------------------------------- #
# Running one measurement
# --------------------------------------------------------------------------- #


@contextmanager
def tree_on_path(root: Path) -> Iterator[None]:
    """``root``/src first on PYTHONPATH while the block runs: fetch_bench.run_tree
    starts its child with this process's environment (without
    PYTHONDONTWRITEBYTECODE)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"), before]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def fetch_cmd(urls: Path, out: Path, concurrency: int, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "parallelize",
        "fetch",
        str(urls),
        "-w",
        str(concurrency),
        "--client",
        "pyreqwest",
        "-q",
        "-o",
        str(out),
        *extra,
    ]


def fields_named(extra: list[str]) -> list[str]:
    """The record keys ``--fields`` adds (header:NAME and the like left out)."""
    names: list[str] = []
    for flag, value in zip(extra, extra[1:], strict=False):
        if flag == "--fields":
            names += [f for f in value.split(",") if f and ":" not in f]
    return names


def check_output(out: Path, extra: list[str], expected: dict[str, int]) -> list[str]:
    """Problems with a run's output (empty: all there). One line per URL; for JSON
    records also every URL once, status 200, its size, and the ``--fields`` keys."""
    if not out.exists():
        return ["no output file"]
    lines = out.read_text().splitlines()
    problems = [] if len(lines) == len(expected) else [f"{len(lines)} lines, not {len(expected)}"]
    if "--format" in extra:
        return problems
    seen: set[str] = set()
    bad = wrong = duplicate = no_field = 0
    wanted = fields_named(extra)
    for line in lines:
        try:
            record = json.loads(line)
            url = record["url"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        duplicate += url in seen
        seen.add(url)
        if record.get("status") != 200 or record.get("bytes") != expected.get(url):
            wrong += 1
        no_field += any(name not in record for name in wanted)
    missing = len(expected.keys() - seen)
    for count, what in (
        (bad, "unreadable lines"),
        (duplicate, "URLs twice"),
        (missing, "URLs missing"),
        (wrong, "not 200 or wrong size"),
        (no_field, f"records without one of {wanted}"),
    ):
        if count:
            problems.append(f"{count} {what}")
    return problems


def measure(
    root: Path,
    cmd: list[str],
    out: Path,
    tmp: Path,
    timeout: float,
    nginx_master: int | None,
) -> dict[str, Any]:
    """One fresh process tree: fetch_bench.run_tree's sample, plus nginx's CPU."""
    out.unlink(missing_ok=True)
    pids = fetch_bench.nginx_pids(nginx_master) if nginx_master else []
    before = [process_cpu(pid) for pid in pids]
    with tree_on_path(root):
        sample = fetch_bench.run_tree(cmd, timeout, tmp / "stdout.txt", tmp / "stderr.txt")
    after = [process_cpu(pid) for pid in pids]
    known = pids and None not in before and None not in after
    sample["nginx_cpu"] = sum(after) - sum(before) if known else None  # type: ignore[arg-type]
    if sample["exit"] != 0:
        tail = (tmp / "stderr.txt").read_text(errors="replace").strip().splitlines()
        sample["stderr_tail"] = (tail or ["no stderr"])[-1][:200]
    return sample


def compile_tree(root: Path) -> None:
    """The tree's .pyc files, written now, not by a measured run."""
    cmd = [sys.executable, "-m", "compileall", "-q", str(root / "src")]
    subprocess.run(cmd, env=child_env(), check=True, stdout=subprocess.DEVNULL)


def imported_from(root: Path) -> str:
    """Where a child with ``root``'s PYTHONPATH imports parallelize from."""
    code = "import parallelize, pathlib; print(pathlib.Path(parallelize.__file__).parent)"
    with tree_on_path(root):
        done = subprocess.run(
            [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True
        )  # fmt: skip
    return done.stdout.strip() or f"? ({done.stderr.strip()[-200:]})"


def tree_commit(root: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    head = done.stdout.strip()[:70] or "not a git checkout"
    return head + (", src/ has uncommitted changes" if dirty else ", src/ clean")


# --------------------------------------------------------------------------- #
# Statistics and the tables
# --------------------------------------------------------------------------- #


def quartiles(values: list[float]) -> tuple[float, float, float] | None:
    """(p25, median, p75), or None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0], values[0], values[0]
    p25, p50, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return p25, p50, p75


def with_spread(q: tuple[float, float, float] | None, spec: str) -> str:
    if q is None:
        return "-"
    return f"{q[1]:{spec}} ({q[0]:{spec}}-{q[2]:{spec}})"


def per_request(samples: list[dict[str, Any]], field: str, n: int) -> list[float]:
    return [s[field] / n * 1e6 for s in samples if not s["problems"] and s[field] is not None]


def paired_diffs(a: list[dict[str, Any]], b: list[dict[str, Any]], n: int) -> list[float]:
    """Per round: b's CPU µs per request minus a's (rounds where both are good)."""
    return [
        (y["cpu"] - x["cpu"]) / n * 1e6
        for x, y in zip(a, b, strict=True)
        if not x["problems"] and not y["problems"]
    ]


def main_table(
    plan: list[tuple[str, str, list[str]]],
    samples: dict[Contender, list[dict[str, Any]]],
    n: int,
) -> str:
    header = [
        "tree",
        "variant",
        "args",
        "CPU µs/req median (p25-p75)",
        "wall s",
        "nginx CPU µs/req",
        "peak RSS MB",
        "good runs",
    ]
    rows = []
    for tree, name, extra in plan:
        runs = samples[(tree, name)]
        good_runs = [s for s in runs if not s["problems"]]
        wall = quartiles([s["elapsed"] for s in good_runs])
        nginx = quartiles(per_request(runs, "nginx_cpu", n))
        rss = quartiles([s["maxrss_kb"] / 1024 for s in good_runs if s.get("maxrss_kb")])
        first_bad: list[str] = next((s["problems"] for s in runs if s["problems"]), [])
        rows.append(
            [
                tree,
                name,
                f"`{shlex.join(extra)}`" if extra else "-",
                with_spread(quartiles(per_request(runs, "cpu", n)), ",.1f"),
                fmt(wall and wall[1], ".3f"),
                fmt(nginx and nginx[1], ",.1f"),
                fmt(rss and rss[1], ",.1f"),
                f"{len(good_runs)}/{len(runs)}"
                + (f" ({'; '.join(first_bad)[:80]})" if first_bad else ""),
            ]
        )
    return markdown(header, rows, right_from=3, check_column=True)


def diff_table(
    plan: list[tuple[str, str, list[str]]],
    samples: dict[Contender, list[dict[str, Any]]],
    n: int,
) -> str:
    """Each (tree, variant) against the last tree's first variant (HEAD plain), and
    the last tree's first variant against each other tree's."""
    trees = list(dict.fromkeys(tree for tree, _, _ in plan))
    base_tree = trees[-1]
    base_name = next(name for tree, name, _ in plan if tree == base_tree)
    base = samples[(base_tree, base_name)]
    base_q = quartiles(per_request(base, "cpu", n))
    rows = []
    for tree, name, _ in plan:
        if (tree, name) == (base_tree, base_name):
            continue
        other = samples[(tree, name)]
        if tree == base_tree:
            label, diffs = f"{tree} {name} - {tree} {base_name}", paired_diffs(base, other, n)
        else:
            label, diffs = f"{base_tree} {base_name} - {tree} {name}", paired_diffs(other, base, n)
        q = quartiles(diffs)
        ref = quartiles(per_request(other if tree != base_tree else base, "cpu", n))
        pct = None if q is None or ref is None else q[1] / ref[1] * 100
        medians = None
        other_q = quartiles(per_request(other, "cpu", n))
        if other_q and base_q:
            medians = (base_q[1] - other_q[1]) * (1 if tree != base_tree else -1)
        rows.append(
            [
                label,
                with_spread(q, "+,.1f"),
                fmt(pct, "+.1f", " %"),
                fmt(medians, "+,.1f"),
                str(len(diffs)),
            ]
        )
    header = [
        "difference",
        "paired per round, µs/req median (p25-p75)",
        "% of the reference",
        "difference of medians µs/req",
        "rounds",
    ]
    return markdown(header, rows, right_from=1, check_column=False)


# --------------------------------------------------------------------------- #
# The one-URL start
# --------------------------------------------------------------------------- #


def import_counts(root: Path, cmd: list[str], tmp: Path) -> str:
    """How many modules one ``-X importtime`` run imports, and how many of them are
    parallelize's; and parallelize's cumulative import µs (one run: noisy)."""
    with tree_on_path(root):
        done = subprocess.run(
            [cmd[0], "-X", "importtime", *cmd[1:]], env=child_env(), capture_output=True,
            text=True, check=False,
        )  # fmt: skip
    names, top = [], None
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if not parts[0].isdigit():
            continue  # the header line
        names.append(parts[2])
        if parts[2].strip() == "parallelize":
            top = int(parts[1])
    ours = [m for m in names if m.strip().startswith("parallelize")]
    return f"{len(names)} modules imported, {len(ours)} of parallelize (cumulative {top} µs)"


def start_runs(
    args: argparse.Namespace, base: str, tmp: Path
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """``--start-runs`` runs each of a one-URL fetch on every tree and of ``python -c
    pass``, interleaved and rotated: their CPU and wall ms, and the import counts."""
    one = tmp / "one-url.txt"
    one.write_text(f"{base}/d/00000.bin\n")
    out = tmp / "start-out.txt"
    keys = [*args.tree_paths, "python -c pass"]
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}

    def run(key: str) -> dict[str, Any]:
        if key in args.tree_paths:
            root = args.tree_paths[key]
            cmd = fetch_cmd(one, out, args.concurrency, [])
        else:
            root, cmd = PROJECT_ROOT, [sys.executable, "-c", "pass"]
        sample = measure(root, cmd, out, tmp, 60, None)
        sample["problems"] = [] if sample["exit"] == 0 else [f"exit {sample['exit']}"]
        if key in args.tree_paths:
            sample["problems"] += check_output(out, [], {f"{base}/d/00000.bin": args.size_0})
        return sample

    for key in keys:  # warm-up, off the clock
        run(key)
    for round_no in range(args.start_runs):
        for key in rotated(keys, round_no):
            sample = run(key)
            sample["round"] = round_no
            samples[key].append(sample)
    rows = []
    for key in keys:
        runs = samples[key]
        good_runs = [s for s in runs if not s["problems"]]
        cpu = quartiles([s["cpu"] * 1e3 for s in good_runs])
        wall = quartiles([s["elapsed"] * 1e3 for s in good_runs])
        rss = quartiles([s["maxrss_kb"] / 1024 for s in good_runs if s.get("maxrss_kb")])
        if key in args.tree_paths:
            cmd = fetch_cmd(one, out, args.concurrency, [])
            counts = import_counts(args.tree_paths[key], cmd, tmp)
        else:
            counts = "-"
        rows.append(
            [
                key,
                with_spread(cpu, ".1f"),
                with_spread(wall, ".1f"),
                fmt(rss and rss[1], ".1f"),
                f"{len(good_runs)}/{len(runs)}",
                counts,
            ]
        )
    header = ["run", "CPU ms median (p25-p75)", "wall ms", "peak RSS MB", "good", "imports"]
    lines = [
        f"### The one-URL start: {args.start_runs} runs each, interleaved",
        "",
        markdown(header, rows, right_from=1, check_column=False),
    ]
    names = list(args.tree_paths)
    for a, b in zip(names, names[1:], strict=False):
        diffs = [
            (y["cpu"] - x["cpu"]) * 1e3
            for x, y in zip(samples[a], samples[b], strict=True)
            if not x["problems"] and not y["problems"]
        ]
        lines.append(f"\n{b} - {a}, paired per round: {with_spread(quartiles(diffs), '+.1f')} ms")
    return lines, samples


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks
    notes: list[str] = []
    had_system_nginx = Path("/run/nginx.pid").exists()
    nginx = fetch_bench.ensure_tool("nginx", "nginx-light", not args.no_install, notes)
    if nginx and not had_system_nginx:
        fetch_bench.stop_system_nginx(notes)
    if nginx is None:
        print("\n".join(notes), file=sys.stderr)
        print("fetch_ab.py: nginx is needed (apt-get install nginx-light)", file=sys.stderr)
        return 2
    for root in args.tree_paths.values():
        compile_tree(root)

    plan: list[tuple[str, str, list[str]]] = args.plan
    contenders: list[Contender] = [(tree, name) for tree, name, _ in plan]
    extras = {(tree, name): extra for tree, name, extra in plan}
    samples: dict[Contender, list[dict[str, Any]]] = {c: [] for c in contenders}
    start_lines: list[str] = []
    start_samples: dict[str, list[dict[str, Any]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="parallelize-fetch-ab-"))
    tmp.chmod(0o755)  # nginx's worker runs as nobody when we are root: it must read www/
    try:
        print(f"setup: writing {args.urls:,} files to {tmp}/www", flush=True)
        paths, sizes = fetch_bench.make_files(tmp / "www", args.urls, 0)
        args.size_0 = sizes["/d/00000.bin"]
        with fetch_bench.nginx_server(nginx, tmp) as (base, master, _):
            urls = tmp / "urls.txt"
            urls.write_text("".join(f"{base}{p}\n" for p in paths))
            expected = {base + p: sizes[p] for p in paths}
            setup = [
                f"project: {src_state()}",
                *(
                    f"tree {name}: {root} ({tree_commit(root)}); imports {imported_from(root)}"
                    for name, root in args.tree_paths.items()
                ),
                f"python: {sys.version.split()[0]} ({sys.executable})",
                f"pyreqwest {version_of('pyreqwest')}, uvloop {version_of('uvloop')}",
                f"nginx: {fetch_bench.tool_version([nginx, '-v'])}",
                *(f"setup: {note}" for note in notes),
                f"machine: {machine()}",
                f"load average at start: {load_average()}",
                (
                    f"URLs: {len(paths):,} files, all 200, {sum(sizes.values()) / 1e6:.1f} MB, "
                    f"shuffled (seed {fetch_bench.SEED}); -w {args.concurrency}; "
                    f"{args.rounds} rounds interleaved, order rotated each round"
                ),
                "command: " + shlex.join(fetch_cmd(urls, tmp / "out.txt", args.concurrency, [])),
            ]
            print("\n".join(setup), "", sep="\n", flush=True)
            out = tmp / "out.txt"
            for contender in contenders:  # warm-up, off the clock
                cmd = fetch_cmd(urls, out, args.concurrency, extras[contender])
                measure(args.tree_paths[contender[0]], cmd, out, tmp, args.timeout, master)
            started = time.perf_counter()
            for round_no in range(args.rounds):
                for contender in rotated(contenders, round_no):
                    tree, name = contender
                    extra = extras[contender]
                    cmd = fetch_cmd(urls, out, args.concurrency, extra)
                    sample = measure(args.tree_paths[tree], cmd, out, tmp, args.timeout, master)
                    problems = check_output(out, extra, expected)
                    if sample["exit"] != 0:
                        problems.insert(0, f"exit {sample['exit']}: {sample.get('stderr_tail')}")
                    sample |= {"round": round_no, "problems": problems}
                    samples[contender].append(sample)
                    state = "ok" if not problems else "; ".join(problems)[:100]
                    print(
                        f"round {round_no + 1}/{args.rounds}  {tree}/{name:<8} "
                        f"{sample['cpu'] / len(paths) * 1e6:7.1f} µs/req  "
                        f"{sample['elapsed']:6.2f} s  {state}",
                        flush=True,
                    )
            minutes = (time.perf_counter() - started) / 60
            if args.start_runs:
                print("the one-URL start ...", flush=True)
                start_lines, start_samples = start_runs(args, base, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    setup.append(f"load average at the end: {load_average()}")
    after = src_state()
    if after != setup[0].removeprefix("project: "):
        setup.append(f"WARNING: src/ changed during the run; at the end: {after}")
    n = len(paths)
    text = "\n".join(
        [
            f"## parallelize fetch A/B ({minutes:.1f} min of rounds)",
            "",
            "```",
            *setup,
            "```",
            "",
            f"### {n:,} URLs: the process tree's CPU µs per request",
            "",
            main_table(plan, samples, n),
            "",
            "### Differences (paired by round)",
            "",
            diff_table(plan, samples, n),
            "",
            *start_lines,
        ]
    )
    print("\n" + text)
    raw = {
        "argv": argv if argv is not None else sys.argv[1:],
        "setup": setup,
        "urls": n,
        "plan": [{"tree": t, "variant": v, "args": a} for t, v, a in plan],
        "samples": {f"{tree}/{name}": runs for (tree, name), runs in samples.items()},
        "start": start_samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(raw, indent=1))
    print(f"raw samples: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
