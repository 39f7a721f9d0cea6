"""Fields bound to the current context: bind, unbind, clear, a `with` block, and isolation
between tasks and threads."""

from __future__ import annotations

import asyncio
import threading

import asynclog
from asynclog._context import bound_fields


def test_bind_unbind_and_clear_edit_the_current_fields() -> None:
    asynclog.bind_contextvars(user="ada", tenant="t1")
    asynclog.bind_contextvars(user="bob")  # a later bind replaces the value
    assert asynclog.get_contextvars() == {"user": "bob", "tenant": "t1"}
    asynclog.unbind_contextvars("tenant", "never-bound")
    assert asynclog.get_contextvars() == {"user": "bob"}
    asynclog.clear_contextvars()
    assert asynclog.get_contextvars() == {}


def test_a_captured_mapping_is_a_snapshot_and_get_returns_a_copy() -> None:
    asynclog.bind_contextvars(step=1)
    captured = bound_fields.get()  # what a record captured on the caller holds
    asynclog.bind_contextvars(step=2)
    asynclog.unbind_contextvars("step")
    assert captured == {"step": 1}
    copy = asynclog.get_contextvars()
    copy["injected"] = True
    assert "injected" not in asynclog.get_contextvars()


def test_bound_restores_the_previous_fields_even_on_an_exception() -> None:
    asynclog.bind_contextvars(request_id="r1")
    try:
        with asynclog.bound(request_id="r2", job="j"):
            assert asynclog.get_contextvars() == {"request_id": "r2", "job": "j"}
            raise KeyError("inside")
    except KeyError:
        pass
    assert asynclog.get_contextvars() == {"request_id": "r1"}


def test_tasks_and_threads_do_not_see_each_others_fields() -> None:
    async def task(name: str) -> dict[str, object]:
        asynclog.bind_contextvars(task=name)
        await asyncio.sleep(0)  # the other task binds in between
        return asynclog.get_contextvars()

    async def main() -> list[dict[str, object]]:
        return list(await asyncio.gather(task("a"), task("b")))

    assert asyncio.run(main()) == [{"task": "a"}, {"task": "b"}]
    seen: list[dict[str, object]] = []
    asynclog.bind_contextvars(main="yes")
    thread = threading.Thread(target=lambda: seen.append(asynclog.get_contextvars()))
    thread.start()
    thread.join()
    assert seen == [{}]  # a new thread starts from an empty context
