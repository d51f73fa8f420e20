"""schemathesis over the board's own OpenAPI schema (``/schema/openapi.json`` of a running
``board serve``), every operation, request bodies included, as an admin, a submitter and a
farmhand, on SQLite and on PostgreSQL: no 5xx, and every answer is one the schema names, in the
content type and shape it names.

Examples per operation: ``CLIPFARM_FUZZ_EXAMPLES`` (default 16 schema-valid, and half as many schema-invalid);
for a long run: ``CLIPFARM_FUZZ_EXAMPLES=300 .venv/bin/python -m pytest tests/reliability/test_fuzz.py``.
Half of the generated cases have their path ids replaced by real ones (a job held under a lease,
a queued one, a cancelled one, real media, the real lease token; for deletes, cancelled jobs of
their own), so the fuzz reaches past "no such job" into the routes' own checks.
"""

from __future__ import annotations

import collections
import os
import tempfile
import warnings
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import load_all_checks
from schemathesis.generation.modes import GenerationMode

from tests.board.actors import Farmhand, Submitter
from tests.conftest import ENGINES
from tests.harness import RunningBoard, require_pg
from tests.reliability.tools import record

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("CLIPFARM_FUZZ_EXAMPLES", "16"))
ROLES = ("admin", "submitter", "farmhand")
load_all_checks()
from schemathesis.checks import not_a_server_error  # noqa: E402  (registered by load_all_checks)
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# What is asserted, for schema-valid and schema-invalid cases alike. Not
# `positive_data_acceptance`: the schema cannot say everything the board checks (a clip needs
# exactly one source; a stale lease is 409 before its body is read), so a schema-valid request
# may rightly get a 4xx. Not `negative_data_rejection`: the board ignores query parameters it
# does not know (as most APIs do), and the token each case carries undoes the "no token"
# mutation of the invalid cases.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]  # fmt: skip


def _operations() -> list[str]:
    """Every operation of the schema, read from the app itself at collection (the test then
    fuzzes the schema the running board serves, and fails if the two differ)."""
    from board.app import create_app
    from board.config import load_config

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Litestar's deprecation notes about the dashboard
        schema = create_app(load_config(data_dir=Path(tmp))).openapi_schema.to_schema()
    return sorted(f"{m.upper()} {p}" for p, item in schema["paths"].items() for m in item)


OPERATIONS = _operations()


class Objects:
    """Real things on the fuzzed board, for the cases whose ids are replaced."""

    def __init__(self, board: RunningBoard, media_dir: Path) -> None:
        owner = Submitter(board, name=f"fuzz-owner-{os.urandom(3).hex()}")
        self.media = [owner.upload(media_dir / n)["id"] for n in ("a.mp4", "b.mp4")]
        held = owner.submit_ok(owner.compilation(self.media[0]), priority=9)["id"]
        queued = owner.submit_ok(owner.compilation(self.media[1]))["id"]
        cancelled = owner.submit_ok(owner.compilation(*self.media))["id"]
        assert owner.http.post(f"/api/v1/jobs/{cancelled}/cancel").status_code == 200
        self.farmhand = Farmhand(board)
        self.lease = self.farmhand.claim_ok()
        assert self.lease.job_id == held
        self.jobs = [held, queued, cancelled]
        # DELETE cases on real ids take these (a deleted job answers 404 to every later case, so
        # the jobs above stay for the other operations)
        self.doomed = []
        for _ in range(3):
            doomed = owner.submit_ok(owner.compilation(self.media[1]))["id"]
            assert owner.http.post(f"/api/v1/jobs/{doomed}/cancel").status_code == 200
            self.doomed.append(doomed)
        # The submitter owns the objects and the farmhand holds the lease, so their cases on real
        # ids reach the routes' own checks; the admin may touch everything.
        admin = board.token("admin", f"fuzz-admin-{os.urandom(4).hex()}")
        self.tokens = {"admin": admin, "submitter": owner.token, "farmhand": self.farmhand.token}


@pytest.fixture(scope="module", params=ENGINES)
def fuzzed(request, tmp_path_factory, media_dir):
    if request.param == "postgres":
        require_pg()
    board = RunningBoard(tmp_path_factory.mktemp("fuzz-board"), request.param).start()
    objects = Objects(board, media_dir)
    schema = schemathesis.openapi.from_url(f"{board.url}/schema/openapi.json")
    statuses: collections.Counter = collections.Counter()
    yield board, schema, objects, statuses
    served = sorted(f"{m.upper()} {p}" for p, item in schema.raw_schema["paths"].items()
                    for m in item)  # fmt: skip
    record(f"fuzz-{request.param}", examples_per_operation=EXAMPLES, operations=len(served),
           requests=sum(statuses.values()), server_errors=sum(
               n for (_, code), n in statuses.items() if code >= 500),
           by_status={str(code): sum(n for (_, c), n in statuses.items() if c == code)
                      for code in sorted({c for _, c in statuses})})  # fmt: skip
    log = board.log_path.read_text(errors="replace")
    board.close()
    assert served == OPERATIONS, "the running board serves another schema than the app makes"
    assert "Traceback" not in log, log[-3000:]


def _operation(schema, label: str):
    method, path = label.split(" ", 1)
    return schema[path][method]


def _aim(case, objects: Objects, pick: int | None) -> None:
    """Point a case at real objects (``pick`` chooses which; None leaves it as generated), and
    keep it from long-polling."""
    if isinstance(case.body, dict) and "wait_s" in case.body:
        case.body["wait_s"] = 0  # a claim may wait 30 s for work: not what is fuzzed here
    params = case.path_parameters or {}
    if pick is None and any(value in (".", "..") for value in params.values()):
        # No client can send an id of "." or "..": URL resolution (RFC 3986, 5.2.4) removes the
        # segment, and `POST /jobs/./retry` arrives as `POST /jobs/retry` (405). Aim it instead.
        pick = 0
    if pick is None:
        return
    if "job_id" in params:
        params["job_id"] = objects.jobs[pick % len(objects.jobs)]
        if case.method.upper() == "DELETE":
            params["job_id"] = objects.doomed[pick % len(objects.doomed)]
        if case.path.endswith("/events"):  # a live job's event stream stays open: not this
            params["job_id"] = objects.jobs[-1]  # one, the cancelled job's ends at once
    if "media_id" in params:
        params["media_id"] = objects.media[pick % len(objects.media)]
    if case.headers is not None and "X-Lease-Token" in case.headers:
        case.headers["X-Lease-Token"] = objects.lease.token


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_answers_as_its_schema_says_for_every_role(fuzzed, label):
    board, schema, objects, statuses = fuzzed
    operation = _operation(schema, label)
    session = requests.Session()
    failures: dict[str, str] = {}

    def run(mode: GenerationMode, examples: int, checks: list) -> None:
        @given(case=operation.as_strategy(generation_mode=mode), role=st.sampled_from(ROLES),
               pick=st.none() | st.integers(0, 5))  # fmt: skip
        @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
        def one(case, role, pick):
            _aim(case, objects, pick)
            auth = {"Authorization": f"Bearer {objects.tokens[role]}"}
            response = case.call(base_url=board.url, session=session, headers=auth, timeout=60)
            statuses[(label, response.status_code)] += 1
            try:
                case.validate_response(response, checks=checks, headers=auth)
            except BaseException as exc:  # a FailureGroup: keep the first of each kind
                kind = f"{mode.value} {role} {response.status_code} {type(exc).__name__}"
                failures.setdefault(kind, f"{exc}"[:1500])

        one()

    run(GenerationMode.POSITIVE, EXAMPLES, CHECKS)
    try:
        run(GenerationMode.NEGATIVE, max(1, EXAMPLES // 2), CHECKS)
    except Unsatisfiable:
        pass  # nothing in this operation's schema can be made invalid (no body, free strings)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
