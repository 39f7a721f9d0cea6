"""An example FastAPI service instrumented with one call: `asynclog.install(app)`.

Run it: `gunicorn -c sidecar/gunicorn.conf.py example.app:app`, or
`uvicorn example.app:app` for a quick look. Settings come from ASYNCLOG_* variables.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import asynclog

app = FastAPI(title="asynclog example")
log = asynclog.get_logger("example")
# Third-party libraries log through the stdlib; their lines get the same trace ids.
library_log = logging.getLogger("example.library")


class Item(BaseModel):
    id: int
    name: str
    price: float


class Order(BaseModel):
    item_id: int
    quantity: int


class OrderReceipt(BaseModel):
    order_id: str
    total: float


class Health(BaseModel):
    status: str


_CATALOG = {n: Item(id=n, name=f"item-{n}", price=round(9.99 + n, 2)) for n in range(1, 101)}


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Item:
    """Two lines with fields per request (the benchmark's route)."""
    item = _CATALOG.get(item_id) or Item(id=item_id, name=f"item-{item_id}", price=1.0)
    log.info("item fetched", item_id=item_id, source="catalog")
    log.info("price computed", item_id=item_id, price=item.price, currency="EUR")
    return item


@app.post("/orders", status_code=201)
async def create_order(order: Order) -> OrderReceipt:
    item = _CATALOG.get(order.item_id)
    if item is None:
        log.warning("unknown item ordered", item_id=order.item_id)
        raise HTTPException(status_code=404, detail="no such item")
    receipt = OrderReceipt(
        order_id=f"o-{order.item_id}-{order.quantity}", total=item.price * order.quantity
    )
    log.info("order placed", order_id=receipt.order_id, total=receipt.total)
    return receipt


@app.get("/sync")
def sync_report() -> dict[str, int]:
    """A sync `def` route: FastAPI runs it in the threadpool; its lines keep the trace ids."""
    library_log.info("report built in a worker thread", extra={"rows": 3})
    return {"rows": 3}


@app.get("/slow")
async def slow() -> dict[str, float]:
    await asyncio.sleep(0.2)
    log.info("slow work done", waited_s=0.2)
    return {"waited_s": 0.2}


@app.get("/block")
async def block() -> dict[str, float]:
    """The anti-pattern the watchdog exists for: blocking work inside `async def`."""
    time.sleep(0.3)
    return {"blocked_s": 0.3}


@app.get("/fail")
async def fail() -> dict[str, str]:
    log.info("about to fail")
    raise RuntimeError("boom")


@app.get("/marker/{marker}")
async def marker(marker: str) -> dict[str, str]:
    """Logs its marker natively and through the stdlib (used by the correlation tests)."""
    log.info("marker", marker=marker)
    library_log.info("library marker %s", marker, extra={"marker": marker})
    await asyncio.sleep(0)
    return {"marker": marker}


@app.get("/health")
async def health() -> Health:
    return Health(status="ok")


# Probes hit /health every few seconds: their access lines are noise.
asynclog.install(app, service_name="asynclog-example", exclude_paths={"/health"})
