"""The event-loop watchdog: a thread that notices when blocking work stalls the loop, and where.

CPU or blocking work inside an `async def` route stops every other request on the worker. The
watchdog pings the loop every `interval`; when a ping is not answered within `threshold`, it reads
the loop thread's stack at that moment and, once the loop answers, writes one warning::

    {"level": "warning", "logger": "asynclog.watchdog", "message": "event loop blocked",
     "blocked_ms": 301.2, "threshold_ms": 100.0, "frame": "app/routes.py:12 in slow_route",
     "route": "/slow", "method": "GET", "stack": ["...", "app/routes.py:12 in slow_route"]}

The loop stamps a heartbeat from a timer every `interval`; the thread sleeps until the moment the
next stamp would be `threshold` late, so a healthy loop costs one timer callback per interval and
the thread about one wake-up per `threshold + interval`, with no wake-ups of the loop from the
thread. Stacks are only read during a stall.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from types import FrameType
from typing import Any

from ._pipeline import get_logger

__all__ = ["LoopWatchdog"]

# Frames from these packages are plumbing between the loop and the application: the blocking frame
# reported is the innermost frame outside them (and outside the standard library).
_PLUMBING = (
    "anyio",
    "asynclog",
    "fastapi",
    "gunicorn",
    "h11",
    "httptools",
    "opentelemetry",
    "sniffio",
    "starlette",
    "uvicorn",
    "uvicorn_worker",
    "uvloop",
    "websockets",
)
_STDLIB = os.path.dirname(os.__file__) + os.sep
_SITE_DIRS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)
_STACK_DEPTH = 8  # frames kept in the warning's `stack`, innermost last
_MAX_WALK = 300  # frames walked outward looking for the ASGI scope
_MAX_WAIT = 60.0  # seconds a stall is timed before it is reported as still going on


class LoopWatchdog:
    """Warns when `loop` stays blocked longer than `threshold` seconds.

    Call `start()` from inside the running loop (for example in the app's lifespan startup) and
    `stop()` before the loop closes::

        watchdog = LoopWatchdog(asyncio.get_running_loop(), threshold=0.1)
        watchdog.start()
        ...
        watchdog.stop()

    A block is always caught when it lasts at least `threshold + interval`. `checks`, `stalls` and
    `errors` count the thread's looks at the heartbeat, stalls reported, and exceptions the thread
    survived.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold: float = 0.1,
        interval: float = 0.02,
        logger_name: str = "asynclog.watchdog",
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"asynclog: watchdog threshold={threshold!r} must be > 0 seconds")
        if not interval > 0:
            raise ValueError(f"asynclog: watchdog interval={interval!r} must be > 0 seconds")
        self.loop = loop
        self.threshold = threshold
        self.interval = interval
        self.logger_name = logger_name
        self.checks = 0
        self.stalls = 0
        self.errors = 0
        self._loop_thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # When the loop last ran its heartbeat timer; the next one is due `interval` later.
        self._beat = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._cwd = ""

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<asynclog.LoopWatchdog {state} threshold={self.threshold}s "
            f"checks={self.checks} stalls={self.stalls}>"
        )

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start watching; must be called on the loop's own thread. A second call does nothing."""
        if self.running:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            # The thread id read here is the one whose stack is read during a stall.
            raise RuntimeError(
                "asynclog: LoopWatchdog.start() must be called from inside its running loop, "
                "for example in the app's lifespan startup"
            )
        self._loop_thread_id = threading.get_ident()
        self._cwd = os.getcwd() + os.sep
        self._stopping.clear()
        if self._timer is not None:
            self._timer.cancel()  # a heartbeat left by a stop() from another thread
        self._beat = time.monotonic()
        self._timer = self.loop.call_later(self.interval, self._heartbeat)
        self._thread = threading.Thread(target=self._run, name="asynclog-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the thread, waiting at most `timeout` seconds; True if it has ended."""
        thread = self._thread
        self._stopping.set()  # also ends the heartbeat at its next run
        if self._timer is not None and threading.get_ident() == self._loop_thread_id:
            self._timer.cancel()
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def _heartbeat(self) -> None:
        # Runs on the loop: the only work the watchdog adds to it.
        self._beat = time.monotonic()
        if not self._stopping.is_set():
            self._timer = self.loop.call_later(self.interval, self._heartbeat)

    # The watchdog thread.

    def _run(self) -> None:
        while not self._stopping.wait(self._until_late()):
            try:
                if not self._check():
                    return
            except Exception:
                self.errors += 1

    def _until_late(self) -> float:
        """Seconds until the next heartbeat is `threshold` late; `interval` if it already is (the
        loop is stopped, or a stall was just handled)."""
        left = self._beat + self.interval + self.threshold - time.monotonic()
        return left if left > 0 else self.interval

    def _check(self) -> bool:
        """One look at the heartbeat; False when the thread should end (the loop is closed)."""
        loop = self.loop
        if loop.is_closed():
            return False
        self.checks += 1
        beat = self._beat
        due = beat + self.interval
        if time.monotonic() - due < self.threshold:
            return True  # the loop stamped a newer heartbeat meanwhile
        if not loop.is_running():
            return True  # stopped, not blocked: nothing runs timers until it starts again
        try:
            where = self._where_blocked()
        except Exception:  # still time and report the stall, without a frame
            self.errors += 1
            where = {"frame": None, "route": None, "method": None, "stack": []}
        ended = self._wait_for_heartbeat(beat, _MAX_WAIT)
        # stop() also ends this wait; a stall it interrupts is reported as lasting until then,
        # so the last stall before a shutdown is not lost.
        blocked = (self._beat if self._beat != beat else time.monotonic()) - due
        if blocked < self.threshold:
            return True
        self.stalls += 1
        self._report(blocked, where, still_blocked=not ended)
        if not ended:
            # Reported once; keep waiting for this heartbeat so one stall never floods the log.
            return self._wait_for_heartbeat(beat, None)
        return True

    def _wait_for_heartbeat(self, beat: float, timeout: float | None) -> bool:
        """Wait until the loop stamps a heartbeat after `beat`, stop() is called or the loop closes
        (True), or `timeout` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._beat == beat:
            if self._stopping.wait(self.interval) or self.loop.is_closed():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def _report(self, blocked: float, where: dict[str, Any], *, still_blocked: bool) -> None:
        fields: dict[str, Any] = {
            "blocked_ms": round(blocked * 1000, 1),
            "threshold_ms": round(self.threshold * 1000, 1),
            **where,
        }
        if still_blocked:
            fields["still_blocked"] = True
        get_logger(self.logger_name).warning("event loop blocked", **fields)

    def _where_blocked(self) -> dict[str, Any]:
        """The blocking frame, the route being served and the innermost frames, as strings."""
        thread_id = self._loop_thread_id
        frame = sys._current_frames().get(thread_id) if thread_id is not None else None
        try:
            return self._describe(frame)
        finally:
            del frame  # a frame keeps its request's objects alive

    def _describe(self, innermost: FrameType | None) -> dict[str, Any]:
        found: dict[str, Any] = {"frame": None, "route": None, "method": None, "stack": []}
        plumbing = _plumbing_dirs()
        stack: list[str] = []
        blocking: str | None = None
        frame = innermost
        depth = 0
        while frame is not None and depth < _MAX_WALK:
            code = frame.f_code
            if len(stack) < _STACK_DEPTH:
                stack.append(self._format(frame))
            if blocking is None and not _is_plumbing(code.co_filename, plumbing):
                blocking = self._format(frame)
            if "scope" in code.co_varnames:
                route = _route(frame)
                if route is not None:
                    found["route"], found["method"] = route
                    break
            frame = frame.f_back
            depth += 1
        del frame
        if innermost is not None:
            found["frame"] = blocking or self._format(innermost)
        stack.reverse()
        found["stack"] = stack
        return found

    def _format(self, frame: FrameType) -> str:
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)  # co_qualname is 3.11+
        return f"{self._short(code.co_filename)}:{frame.f_lineno} in {name}"

    def _short(self, filename: str) -> str:
        for site in _SITE_DIRS:
            index = filename.rfind(site)
            if index >= 0:
                return filename[index + len(site) :]
        if self._cwd and filename.startswith(self._cwd):
            return filename[len(self._cwd) :]
        if filename.startswith(_STDLIB):
            return filename[len(_STDLIB) :]
        return filename


def _plumbing_dirs() -> tuple[str, ...]:
    # Only packages already imported can have frames on the stack, so sys.modules is enough.
    dirs = []
    for name in _PLUMBING:
        module = sys.modules.get(name)
        for path in getattr(module, "__path__", ()):
            dirs.append(os.path.join(path, ""))
    return tuple(dirs)


def _is_plumbing(filename: str, plumbing: tuple[str, ...]) -> bool:
    if filename.startswith("<frozen "):
        return True
    if filename.startswith(_STDLIB):
        return not any(site in filename for site in _SITE_DIRS)
    return filename.startswith(plumbing)


def _route(frame: FrameType) -> tuple[str, str | None] | None:
    """The route template (or path) and method of the ASGI call `frame` is serving, if it is."""
    # f_locals of another thread's running frame is a snapshot (3.11-3.12) or a read-through proxy
    # (3.13+); it is only read here.
    scope = frame.f_locals.get("scope")
    if not isinstance(scope, dict) or scope.get("type") not in ("http", "websocket"):
        return None
    template = getattr(scope.get("route"), "path", None)
    path = template if isinstance(template, str) else scope.get("path")
    if not isinstance(path, str):
        return None
    method = scope.get("method")
    return path, method if isinstance(method, str) else None
