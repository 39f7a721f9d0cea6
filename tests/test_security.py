"""Secrets never reach a line, request ids cannot inject anything, input cannot forge a line.

Secret values are looked for in the raw bytes of the log file, not only in the fields meant to
mask them: wherever a value could surface (a repr, a nested field, a span attribute), it must
not. Each secret is a unique alphanumeric marker, so no encoding (JSON, percent) could hide it.
Extends tests/test_access_log.py (query masking), tests/test_request_id.py (request-id reuse)
and tests/test_hostile_input.py; the unit tests of the redaction these lines rely on are in
tests/test_redact.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel

import asynclog

from conftest import FLUSH_S, QUIET, read_lines

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REDACTED = "[REDACTED]"
FORGED = '\n{"time":"2026-01-01T00:00:00Z","level":"error","logger":"forged","message":"x"}\n'


def secret(name: str) -> str:
    return f"S3cr3t{name}{uuid.uuid4().hex}"


def raw_lines(path: Path) -> list[bytes]:
    """The file's lines, split at b"\\n" only, each checked to be one JSON object."""
    assert asynclog.flush(FLUSH_S)
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    for line in lines:
        assert isinstance(json.loads(line), dict), line[:200]
    return lines


def assert_nowhere(path: Path, secrets: list[str]) -> None:
    assert asynclog.flush(FLUSH_S)
    data = path.read_bytes()
    leaked = [value for value in secrets if value.encode() in data]
    assert not leaked, f"in the log file: {leaked}"


@pytest.fixture(autouse=True)
def _no_test_client_lines() -> Iterator[None]:
    """The test client's own http library logs each URL it requests at INFO: that is the
    client's line, not the app's (a real server has no such line)."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpx2")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


# Headers and query parameters through a real app ---------------------------------------------

SECRET_PARAMS = [
    "token",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "authorization",
    "cookie",
]


def login_app(log_path: Path, session: str, **settings: Any) -> FastAPI:
    app = FastAPI()
    log = asynclog.get_logger("app")

    @app.get("/login")
    async def login(request: Request, response: Response) -> dict[str, bool]:
        response.set_cookie("session", session)
        # What apps do: log the request's headers and query, as Starlette objects and as dicts.
        log.info(
            "login",
            headers=request.headers,
            header_dict=dict(request.headers),
            query=request.query_params,
            query_dict=dict(request.query_params),
            response_headers=response.headers,
        )
        logging.getLogger("lib.auth").info(
            "checked", extra={"request": {"headers": dict(request.headers)}}
        )
        return {"authorized": "authorization" in request.headers}

    asynclog.install(app, sink=str(log_path), **{**QUIET, **settings})
    return app


@pytest.mark.parametrize("backend", ["asynclog", "native", "instrumentor"])
def test_secret_headers_and_query_parameters_never_reach_a_line(
    log_path: Path, backend: str, figures: Any
) -> None:
    """Authorization, Cookie, Set-Cookie and secret-named query parameters, in the access line,
    in the app's own lines that include the request's headers, and in span lines."""
    bearer, cookie, session = secret("bearer"), secret("cookie"), secret("session")
    params = {name: secret(name) for name in SECRET_PARAMS}
    upper, encoded, repeated = secret("upper"), secret("encoded"), secret("repeated")
    query = "&".join(f"{name}={value}" for name, value in params.items())
    query += f"&TOKEN={upper}&%74oken={encoded}&token={repeated}&page=2"
    app = login_app(log_path, session, spans="log", tracing_backend=backend)
    with TestClient(app) as client:
        response = client.get(
            f"/login?{query}",
            headers={"Authorization": f"Bearer {bearer}", "Cookie": f"sid={cookie}"},
        )
    # The secrets were really in play: sent, seen by the route, set in the response.
    assert response.json() == {"authorized": True}
    assert session in response.headers["set-cookie"]

    assert_nowhere(log_path, [bearer, cookie, session, upper, encoded, repeated, *params.values()])
    lines = [json.loads(line) for line in raw_lines(log_path)]
    [line] = [line for line in lines if line["logger"] == "app"]
    for headers in (line["headers"], line["header_dict"]):
        assert headers["authorization"] == headers["cookie"] == REDACTED
    assert line["response_headers"]["set-cookie"] == REDACTED
    for query_field in (line["query"], line["query_dict"]):
        assert query_field["token"] == query_field["api_key"] == REDACTED
        assert query_field["page"] == "2"
    [lib] = [line for line in lines if line["logger"] == "lib.auth"]
    assert lib["request"]["headers"]["authorization"] == REDACTED
    [access] = [line for line in lines if line["logger"] == "asynclog.access"]
    assert "page=2" in access["url.query"] and "token=%5BREDACTED%5D" in access["url.query"]
    spans = [line for line in lines if line["logger"] == "asynclog.span"]
    assert spans, "no span line: the span attributes were not checked"
    figures(requests=1, lines=len(lines), secrets=len(params) + 6, leaked=0)


# Secret-named fields at any depth ---------------------------------------------------------------


@dataclasses.dataclass
class Credentials:
    user: str
    password: str


class Session(BaseModel):
    user: str
    api_key: str


def nest(depth: int, leaf: Any) -> Any:
    """`leaf` at `depth` levels of alternating dicts and lists."""
    value = leaf
    for level in range(depth - 1):
        value = {"level": value} if level % 2 else [value]
    return value


def self_referencing(secret_value: str) -> dict[str, Any]:
    value: dict[str, Any] = {"password": secret_value}
    value["self"] = value
    return value


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secret_named_fields_are_masked_at_any_depth(
    log_path: Path, fmt: str, figures: Any
) -> None:
    asynclog.configure(sink=str(log_path), format=fmt)
    log = asynclog.get_logger("app")
    std = logging.getLogger("lib")
    secrets: list[str] = []

    def hidden(name: str) -> str:
        secrets.append(secret(name))
        return secrets[-1]

    values: dict[str, Any] = {
        **{f"depth {d}": nest(d, {"password": hidden(f"depth{d}")}) for d in (1, 2, 8, 9, 50, 200)},
        "mixed case": {"Password": hidden("a"), "API_KEY": hidden("b"), "Set-Cookie": hidden("c")},
        "tuple": ({"token": hidden("tuple")},),
        "mappingproxy": MappingProxyType({"secret": hidden("proxy")}),
        "dataclass": [Credentials("ann", hidden("dataclass"))],
        "pydantic": {"session": Session(user="ann", api_key=hidden("pydantic"))},
        # values orjson refuses on the caller: the writer's fallback must mask them too
        "with a huge int": {"n": 2**70, "auth": {"authorization": hidden("huge")}},
        "with a lone surrogate": ["\ud800", {"refresh_token": hidden("surrogate")}],
        "self-referencing": self_referencing(hidden("cycle")),
        "1,000 deep": nest(1000, {"password": hidden("deep1000")}),
    }
    calls = 0
    for name, value in values.items():
        log.info(name, value=value)
        log.bind(value=value).info(name)
        with asynclog.bound(value=value):
            log.info(name)
        std.info(name, extra={"value": value})
        calls += 4
    log.info("top level", password=hidden("top"), Token=hidden("top2"))
    std.info("top level", extra={"api_key": hidden("extra")})
    calls += 2

    assert_nowhere(log_path, secrets)
    data = log_path.read_bytes()
    if fmt == "json":
        assert len(raw_lines(log_path)) == calls
        first = json.loads(data.split(b"\n")[0])
        assert first["value"] == {"password": REDACTED}
    else:
        assert data.count(b"\n") == calls
    assert data.count(REDACTED.encode()) >= len(secrets)
    figures(calls=calls, lines=data.count(b"\n"), secrets=len(secrets), leaked=0)


def test_names_that_end_in_a_secret_key_are_masked_too(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    variants = {
        "X-Api-Key": "k1",
        "client_secret": "k2",
        "proxy-authorization": "k3",
        "accessToken": "k4",
        "http.request.header.x-auth-token": "k5",
        "csrf_token": "k6",
        "JWTToken": "k7",
        "HTTPAuthorization": "k8",
    }
    kept = {"token_count": 3, "passwordHint": "pet's name", "tokens": 7}
    asynclog.get_logger("app").info("request", headers=variants, **kept)
    asynclog.flush()
    (line,) = read_lines(log_path)
    assert line["headers"] == dict.fromkeys(variants, REDACTED)
    assert {key: line[key] for key in kept} == kept


def test_beyond_redact_depth_a_container_is_masked_whole(log_path: Path) -> None:
    """A lower `redact_depth` bounds how deep redaction looks: what it did not look at is not
    written."""
    asynclog.configure(sink=str(log_path), format="json", redact_depth=2)
    deep = secret("deep")
    asynclog.get_logger("app").info("deep", value={"a": {"b": {"c": {"password": deep}}}, "k": 1})
    assert_nowhere(log_path, [deep])
    [line] = [json.loads(line) for line in raw_lines(log_path)]
    assert line["value"] == {"a": {"b": REDACTED}, "k": 1}


# Request ids -----------------------------------------------------------------------------------

BAD_REQUEST_IDS: list[str | bytes] = [
    "EVIL01" + "a" * 59,  # 65 characters
    "EVIL02" + "b" * 10_000,
    'EVIL03"quoted"',
    "EVIL04 with spaces",
    "EVIL05;semi",
    "<script>EVIL06</script>",
    "EVIL07\r\nSet-Cookie: stolen=1",
    'EVIL08\n{"level":"error"}',
    "EVIL09\x00nul",
    "EVIL10\x1b[31m",
    "EVIL11é".encode(),
    b"EVIL12\xff\xfe",
    "",
]


def request_id_app(log_path: Path) -> FastAPI:
    app = FastAPI()
    log = asynclog.get_logger("app")

    @app.get("/work")
    async def work() -> dict[str, bool]:
        log.info("working")
        return {"ok": True}

    asynclog.install(app, sink=str(log_path), spans="log", **QUIET)
    return app


def test_malformed_request_ids_are_replaced_and_never_echoed(log_path: Path, figures: Any) -> None:
    """Too long, quotes, spaces, CR/LF, NUL, escapes, non-ASCII: a fresh id in the response and
    every line, the incoming one nowhere. (The test client hands CR/LF and NUL to the app as
    they are, which a real HTTP parser would refuse earlier.)"""
    app = request_id_app(log_path)
    kept = "ok-" + "k" * 61  # 64 characters of the allowed alphabet: reused as it is
    replaced: list[str] = []
    with TestClient(app) as client:
        for incoming in BAD_REQUEST_IDS:
            response = client.get("/work", headers={"x-request-id": incoming})
            assert response.status_code == 200
            assert len(response.headers.get_list("x-request-id")) == 1
            assert re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"]), incoming
            replaced.append(response.headers["x-request-id"])
        assert client.get("/work", headers={"x-request-id": kept}).headers["x-request-id"] == kept
    data = log_path.read_bytes()
    for marker in (f"EVIL{n:02d}" for n in range(1, 13)):
        assert marker.encode() not in data
    lines = [json.loads(line) for line in raw_lines(log_path)]
    route_ids = [line["request_id"] for line in lines if line["logger"] == "app"]
    access_ids = [line["request_id"] for line in lines if line["logger"] == "asynclog.access"]
    assert route_ids == access_ids == [*replaced, kept]
    assert len(set(replaced)) == len(replaced)
    figures(requests=len(BAD_REQUEST_IDS) + 1, lines=len(lines), replaced=len(replaced))


def test_request_id_with_crlf_through_the_asgi_interface(log_path: Path) -> None:
    """The same at the ASGI level, with the raw header bytes a lenient server could pass on."""
    app = request_id_app(log_path)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/work",
        "raw_path": b"/work",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-request-id", b"EVIL13\r\nSet-Cookie: a=1\r\n\r\n<html>")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "app": app,
    }
    with TestClient(app):  # runs the lifespan (the writer is up)
        asyncio.run(app(scope, receive, send))
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    headers = dict(start["headers"])
    assert re.fullmatch(rb"[0-9a-f]{32}", headers[b"x-request-id"])
    assert all(b"\r" not in v and b"\n" not in v for _, v in start["headers"])
    assert b"EVIL13" not in log_path.read_bytes()
    assert len(raw_lines(log_path)) >= 2


# Forged lines ----------------------------------------------------------------------------------


def test_input_cannot_forge_a_json_line(log_path: Path, figures: Any) -> None:
    """A message, a field, a field name, a logger name, `%` args, an exception message and a
    request path carrying a newline and a whole fake line: each call is still one line, with
    the text escaped inside it."""
    app = FastAPI()

    @app.get("/echo/{text}")
    async def echo(text: str) -> dict[str, bool]:
        asynclog.get_logger("app").info(text, echoed=text)
        return {"ok": True}

    asynclog.install(app, sink=str(log_path), **QUIET)
    log = asynclog.get_logger("app")
    std = logging.getLogger("lib")
    log.info(FORGED, field=FORGED, **{FORGED: 1})
    asynclog.get_logger(FORGED).info("logger name")
    std.info("args %s", FORGED, extra={"field": FORGED})
    std.info(FORGED)
    try:
        raise ValueError(FORGED)
    except ValueError:
        log.exception(FORGED)
    calls = 5
    with TestClient(app) as client:
        assert client.get("/echo/%0A%7B%22level%22%3A%22error%22%7D%0D%0A").status_code == 200
    calls += 2  # the route's line and the access line

    lines = [json.loads(line) for line in raw_lines(log_path)]
    assert len(lines) == calls
    assert not [line for line in lines if line["logger"] == "forged"]
    assert lines[0]["message"] == lines[0]["field"] == FORGED and lines[0][FORGED] == 1
    assert lines[1]["logger"] == FORGED
    assert lines[2]["message"] == f"args {FORGED}" and lines[2]["field"] == FORGED
    assert lines[3]["message"] == FORGED
    assert lines[4]["exception"]["message"] == FORGED
    [route] = [line for line in lines if "echoed" in line]
    assert route["message"] == route["echoed"] == '\n{"level":"error"}\r\n'
    figures(calls=calls, lines=len(lines))


def test_input_cannot_forge_a_console_line(log_path: Path) -> None:
    """The console format escapes control characters too: no raw CR/LF, no terminal escapes."""
    asynclog.configure(sink=str(log_path), format="console")
    log = asynclog.get_logger("app")
    log.info(FORGED + "\x1b[2J\r", user="a\nb", **{"key\r\n": "\x1b]0;title\x07"})
    asynclog.get_logger("app\n12:00:00.000 ERROR").info("logger name")
    logging.getLogger("lib").warning("args %s", "x\r\ny\x85z\u2028")
    asynclog.flush(5)
    data = log_path.read_bytes()
    assert data.count(b"\n") == 3
    assert b"\r" not in data and b"\x1b" not in data and b"\x07" not in data
    assert "\u2028".encode() not in data and "\x85".encode() not in data
    assert b'\\n{"time"' in data  # the text is there, escaped
