"""The OpenAPI schema a running board serves (``/schema/openapi.json``) is enough to be its
client: every farmhand route documents its request body, and a client that builds each request
from the schema alone (schemathesis's ``Case``), checking every answer against it, drives a whole
farmhand conversation from claim to complete."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import schemathesis

from tests.board.actors import Submitter, new_lane
from tests.harness import RunningBoard
from wire.routes import (
    CLAIM,
    FARMHAND_STATUS,
    HELD_JOB,
    JOB_COMPLETE,
    JOB_CONTEXT,
    JOB_HEARTBEAT,
    JOB_UPLOAD,
    JOB_UPLOAD_THUMBNAIL,
)

# Routes whose body is JSON that names the held job's lease; routes whose body is a file.
LEASE_BODIES = {"heartbeat", "complete", "fail", "release"}
FILE_BODIES = {("PUT", "output"), ("PUT", "thumbnail")}


@pytest.fixture(scope="module")
def served(shared_board) -> Iterator[tuple[RunningBoard, dict]]:
    with shared_board.client() as http:
        r = http.get("/schema/openapi.json")
        assert r.status_code == 200
        yield shared_board, r.json()


def _farmhand_operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [
        (method.upper(), path, op)
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1/farmhand/")
        for method, op in item.items()
    ]


def test_every_farmhand_route_that_takes_a_body_documents_it(served):
    _, schema = served
    operations = _farmhand_operations(schema)
    assert len(operations) >= 10
    for method, path, op in operations:
        last = path.rsplit("/", 1)[-1]
        if method == "GET":
            assert "requestBody" not in op, path
            if path.startswith(HELD_JOB.split("{")[0]):  # a held job's GET carries its lease
                headers = {p["name"].lower() for p in op.get("parameters", [])}
                assert "x-lease-token" in headers, path
            continue
        body = op.get("requestBody")
        assert body and body.get("content"), f"{method} {path} documents no request body"
        if (method, last) in FILE_BODIES:
            for content in body["content"].values():
                assert content["schema"] == {"type": "string", "format": "binary"}, path
            continue
        content = body["content"]["application/json"]["schema"]
        ref = content["$ref"].rsplit("/", 1)[-1]
        properties = schema["components"]["schemas"][ref]["properties"]
        if last in LEASE_BODIES:
            assert "lease_token" in properties, path
            assert "lease_token" in schema["components"]["schemas"][ref]["required"], path


def test_a_client_built_from_the_schema_drives_a_farmhand_conversation(served, media_dir):
    board, raw = served
    schema = schemathesis.openapi.from_dict(raw)
    lane = new_lane()
    submitter = Submitter(board, lane=lane)
    farmhand_token = board.token("farmhand", f"schema-client-{lane}")
    auth = {"Authorization": f"Bearer {farmhand_token}"}
    clip = submitter.upload(media_dir / "a.mp4")["id"]
    job_id = submitter.submit_ok(submitter.compilation(clip))["id"]
    capabilities = {"encoders": ["libx264"], "tags": [lane], "slots": 1}

    def call(template: str, method: str, **parts):
        """One request built from the schema's operation, its answer checked against it."""
        case = schema[template][method].Case(**parts)
        response = case.call(base_url=board.url, headers=auth, timeout=30)
        case.validate_response(response, headers=auth)
        return response

    try:
        r = call(
            FARMHAND_STATUS, "POST", body={"farmhand": "schema-pc"}, media_type="application/json"
        )
        assert r.status_code == 200 and r.json()["state"] == "active"
        body = {"farmhand": "schema-pc", "capabilities": capabilities, "wait_s": 5}
        r = call(CLAIM, "POST", body=body, media_type="application/json")
        assert r.status_code == 200 and r.json()["job_id"] == job_id, r.text
        lease = r.json()["lease_token"]
        held = {"path_parameters": {"job_id": job_id}}

        r = call(JOB_CONTEXT, "GET", headers={"X-Lease-Token": lease}, **held)
        assert r.status_code == 200
        context = r.json()
        assert context["compilation"]["clips"][0]["media"] == clip
        heartbeat = {"lease_token": lease, "stage": "rendering", "progress": 0.5}
        r = call(JOB_HEARTBEAT, "POST", body=heartbeat, media_type="application/json", **held)
        assert r.status_code == 200 and r.json()["cancel"] is False

        output = (media_dir / "b.mp4").read_bytes()
        declared = {
            "X-Lease-Token": lease,
            "X-Upload-Sha256": hashlib.sha256(output).hexdigest(),
            "X-Upload-Size": str(len(output)),
        }
        r = call(JOB_UPLOAD, "PUT", body=output, media_type="application/octet-stream",
                 headers=declared, **held)  # fmt: skip
        assert r.status_code == 200 and r.json()["complete"], r.text
        r = call(JOB_UPLOAD, "GET", headers={"X-Lease-Token": lease}, **held)
        assert r.json() == {"received": len(output), "size": len(output), "complete": True}
        jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 64
        r = call(JOB_UPLOAD_THUMBNAIL, "PUT", body=jpeg, media_type="image/jpeg",
                 headers={"X-Lease-Token": lease}, **held)  # fmt: skip
        assert r.status_code == 204
        done = {"lease_token": lease, "encoder": "libx264"}
        r = call(JOB_COMPLETE, "POST", body=done, media_type="application/json", **held)
        assert r.status_code == 200 and r.json() == {"state": "succeeded"}
        assert submitter.job(job_id)["state"] == "succeeded"
    finally:
        submitter.close()
