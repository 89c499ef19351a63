"""Schemathesis against the ``/v1`` part of the OpenAPI document, in process.

Every ``/v1`` operation gets the examples in the document, schemathesis's coverage cases
(boundaries, missing and wrong-typed fields and headers such as ``Box-Format``) and a bounded
number of generated requests, valid and invalid. Each answer must be no 5xx, a status code
the document lists for that operation, the content type it lists and a body that matches its
schema, and a request the document calls invalid must be refused. The operations on one
session run twice: with the generated id (mostly unknown: 404s) and with the id of a session
that exists, so generated frame bodies reach the parser and the tracker.

Each operation gets an app of its own, in a fresh data directory; its lifespan starts with
the first request and schemathesis's pytest plugin ends it when the test ends. Crashes found
here are kept as plain tests in ``test_fuzz_regressions.py``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from framebroker.config import Settings, load_settings
from framebroker.server import build_app

from .conftest import TEST_LIMITS

V1 = "^/v1/"
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
]
HUNT = os.environ.get("FRAMEBROKER_FUZZ_EXAMPLES")
"""Unset (CI): 40 generated requests per operation, besides the document's examples and the
coverage cases, the same ones every run. Set, a longer random hunt:
``FRAMEBROKER_FUZZ_EXAMPLES=1000 pytest tests/transports/test_openapi_fuzz.py``."""
BOUNDED = settings(
    max_examples=int(HUNT or 40),
    derandomize=HUNT is None,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
# Small limits, so generated bodies reach them.
LIMITS = {**TEST_LIMITS, "max_body_bytes": 200_000}


def fuzz_settings(data_dir: Path, **extra: Any) -> Settings:
    return load_settings(data_dir=data_dir, limits=LIMITS, **extra)


def v1_document() -> dict[str, Any]:
    """The document ``GET /openapi.json`` serves, from an app that is built but never started
    (its store in memory, so collecting the tests writes nothing)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(fuzz_settings(Path(tmp) / "unused", database_url="sqlite://"))
        try:
            return app.openapi()
        finally:
            store = app.state.services.broker.store
            if store is not None:
                store.close()


DOCUMENT = v1_document()
schema = schemathesis.openapi.from_dict(DOCUMENT).include(path_regex=V1)
one_session = schemathesis.openapi.from_dict(DOCUMENT).include(
    path_regex=r"^/v1/sessions/\{session_id\}"
)


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return build_app(fuzz_settings(tmp_path / "data"))


@contextlib.contextmanager
def live_session(app: FastAPI) -> Iterator[str]:
    """A session for one generated request, ended after it (if the request did not end it)."""
    response = schema["/v1/sessions"]["POST"].Case(body={}).call(app=app)
    assert response.status_code == 201, response.text
    sid = str(response.json()["id"])
    yield sid
    ended = schema["/v1/sessions/{session_id}"]["DELETE"].Case(path_parameters={"session_id": sid})
    assert ended.call(app=app).status_code in (200, 404)


def test_the_document_lists_the_session_operations() -> None:
    listed = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    assert {
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/{session_id}"),
        ("DELETE", "/v1/sessions/{session_id}"),
        ("POST", "/v1/sessions/{session_id}/frames"),
    } <= listed


@schema.parametrize()
@BOUNDED
def test_every_v1_operation_answers_as_documented(case: schemathesis.Case, app: FastAPI) -> None:
    case.call_and_validate(app=app, checks=CHECKS)


@one_session.parametrize()
@BOUNDED
def test_operations_on_a_live_session_answer_as_documented(
    case: schemathesis.Case, app: FastAPI
) -> None:
    with live_session(app) as sid:
        case.path_parameters = {**(case.path_parameters or {}), "session_id": sid}
        case.call_and_validate(app=app, checks=CHECKS)
