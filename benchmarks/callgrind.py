"""``python -m benchmarks.callgrind``: instructions per record and per request, by callgrind.

    python -m benchmarks.callgrind                       # every record shape, and a request
    python -m benchmarks.callgrind nested request        # some of them
    python -m benchmarks.callgrind --tree ../old --python ../old/.venv/bin/python

Each figure is a difference: a run of 2N items minus a run of N, over N, so start-up and
shutdown cancel out. A record is one ``logger.info`` of a mix shape (``benchmarks.records``)
to a file, the caller's and the writer's threads together; a request is one ``GET /items/N``
through ``example.app`` in process (raw ASGI, two route lines and the access line), all
threads. Counts are deterministic (``PYTHONHASHSEED=0``): no lock, no quiet machine needed.
``--tree`` counts another checkout's asynclog and example app (its extension built in place)
on this checkout's shapes, for a before/after comparison; ``ASYNCLOG_NO_EXTENSIONS=1`` in the
environment counts the pure-Python path.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
REQUEST = "request"


def _shapes() -> dict[str, Any]:
    """This checkout's record shapes, loaded by path: `--tree` puts another `benchmarks` first."""
    spec = importlib.util.spec_from_file_location("_bench_records", HERE.parent / "records.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass looks its module up while it is made
    spec.loader.exec_module(module)
    shapes: dict[str, Any] = module.SHAPES
    return shapes


# -- what runs under valgrind ------------------------------------------------------------------


def _records(shape: str, n: int, workdir: str) -> None:
    import asynclog

    asynclog.configure(
        sink=os.path.join(workdir, "records.log"), format="json", level="INFO",
        overflow="block", queue_size=200_000,
    )  # fmt: skip
    call = _shapes()[shape].keywords(asynclog.get_logger("mix"))
    for seq in range(n):
        call(seq)
    asynclog.shutdown(timeout=120)


def _empty_body() -> Callable[[], Awaitable[dict[str, Any]]]:
    """A GET's `receive`: its empty body, then a client that stays connected."""
    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if body:
            return body.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


async def _respond(message: MutableMapping[str, Any]) -> None:
    pass


async def _requests(n: int) -> None:
    from example.app import app

    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.shutdown.complete":
            stopped.set()

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.ensure_future(app(lifespan, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await started.wait()
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    for i in range(n):
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": f"/items/{i % 100 + 1}", "raw_path": b"",
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        await app(scope, _empty_body(), _respond)
    await inbox.put({"type": "lifespan.shutdown"})
    await stopped.wait()
    await task


def _child(what: str, n: int) -> None:
    sys.path.remove(str(HERE.parent))  # run as a script: this directory shadows nothing
    with tempfile.TemporaryDirectory(prefix="asynclog-cg-") as workdir:
        if what == REQUEST:
            os.environ.setdefault("ASYNCLOG_SINK", os.path.join(workdir, "app.log"))
            os.environ.setdefault("ASYNCLOG_FORMAT", "json")
            asyncio.run(_requests(n))
        else:
            _records(what, n, workdir)


# -- the parent --------------------------------------------------------------------------------


def instructions(what: str, n: int, tree: Path, python: str, functions: list[str]) -> list[int]:
    """Instructions callgrind counts for one run of `n` items, start-up included: in all, then
    inside each of `functions` (inclusive of what they call)."""
    with tempfile.TemporaryDirectory(prefix="asynclog-cg-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            python, str(HERE), "--child", what, str(n),
        ]  # fmt: skip
        proc = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{what}: exited with {proc.returncode}: {proc.stderr[-2000:]}")
        total = next(
            (int(line.split()[1]) for line in out.read_text().splitlines()
             if line.startswith(("summary:", "totals:"))),
            None,
        )  # fmt: skip
        if total is None:
            raise RuntimeError(f"{what}: no total in callgrind's output")
        return [total, *_inclusive(out, functions)] if functions else [total]


def _inclusive(out: Path, functions: list[str]) -> list[int]:
    """Each function's inclusive count, from `callgrind_annotate` (its own entry only: the
    one that names its binary, not the lines inlined from headers)."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = dict.fromkeys(functions, 0)
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(?:\S*:)?([^\s:]+) \[", line)
        if match and match.group(2) in found:
            found[match.group(2)] += int(match.group(1).replace(",", ""))
    return list(found.values())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.callgrind", description=__doc__)
    parser.add_argument("items", nargs="*", help="shapes and/or 'request' (default: all)")
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout to count")
    parser.add_argument("--python", default=sys.executable, help="its interpreter")
    parser.add_argument("--records", type=int, default=10_000, help="N for a record shape")
    parser.add_argument("--requests", type=int, default=1_000, help="N for a request")
    parser.add_argument(
        "--functions",
        default="",
        metavar="NAME,...",
        help="also each C function's share (e.g. level_method_call,encode_into,put_dumped)",
    )
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    items = args.items or [*_shapes(), REQUEST]
    functions = [f for f in args.functions.split(",") if f]
    heading = [f"{args.tree.resolve()}, instructions per item", "in all", *functions]
    print("| " + " | ".join(heading) + " |")
    print("|---|--:|" + "--:|" * len(functions))
    for what in items:
        n = args.requests if what == REQUEST else args.records
        once = instructions(what, n, args.tree, args.python, functions)
        twice = instructions(what, 2 * n, args.tree, args.python, functions)
        label = "a request (example.app)" if what == REQUEST else f"a record: {what}"
        cells = " | ".join(f"{(b - a) / n:,.0f}" for a, b in zip(once, twice, strict=True))
        print(f"| {label} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
