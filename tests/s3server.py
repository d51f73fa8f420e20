"""The tests' S3-compatible server: moto in server mode, with the checks of presigned requests
that real S3 makes and moto leaves out.

moto keeps objects, multipart uploads and listings faithfully, but takes any presigned URL as
it comes: it checks neither its signature nor its expiry, nor a body against the
``x-amz-checksum-sha256`` it carries (moto's own "TODO: AWS computes the provided value and
verifies it"). A test that a farmhand's URL for job A does not open job B's objects, or that an
expired URL is refused, would pass against moto whatever the board signed. So this server puts a
small WSGI layer in front of moto's own app that checks every presigned (query-signed) request
as S3 does — signature recomputed with botocore's signer and the test credentials, expiry, the
checksum of the body — and answers S3's errors (403 SignatureDoesNotMatch, 403 AccessDenied
"Request has expired", 400 BadDigest). Requests signed in a header (the board's own boto3 calls)
go to moto unchanged.

    python -m tests.s3server PORT     (serves on 127.0.0.1:PORT until terminated)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import sys
import time
from calendar import timegm
from urllib.parse import parse_qsl, urlsplit, urlunsplit

ACCESS_KEY = "clipfarm-test-key"
SECRET_KEY = "clipfarm-test-secret"


def _error(start_response, status: str, code: str, message: str) -> list[bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()  # fmt: skip
    start_response(status, [("Content-Type", "application/xml"),
                            ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def _signature_ok(method: str, host: str, raw_uri: str, headers: dict[str, str]) -> bool:
    """Whether the query signature of this request is the one botocore computes for it with
    the test secret."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.utils import percent_encode_sequence

    parts = urlsplit(raw_uri)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(pairs).get("X-Amz-Signature", "")
    unsigned = percent_encode_sequence([(k, v) for k, v in pairs if k != "X-Amz-Signature"])
    params = dict(pairs)
    key, _day, region, service, _ = params["X-Amz-Credential"].split("/")
    if key != ACCESS_KEY:
        return False
    signed = params["X-Amz-SignedHeaders"].split(";")
    url = urlunsplit(("http", host, parts.path, unsigned, ""))
    request = AWSRequest(method=method, url=url,
                         headers={h: headers.get(h, "") for h in signed if h != "host"})  # fmt: skip
    request.headers["host"] = host
    request.context["timestamp"] = params["X-Amz-Date"]
    signer = S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), service, region,
                              expires=int(params["X-Amz-Expires"]))  # fmt: skip
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return hmac.compare_digest(expected, given)


class StrictPresigned:
    """WSGI middleware: S3's checks of presigned requests, in front of moto's app."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or environ["PATH_INFO"]
        query = dict(parse_qsl(urlsplit(raw_uri).query, keep_blank_values=True))
        if "X-Amz-Signature" not in query:
            return self.app(environ, start_response)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}  # fmt: skip
        if "CONTENT_LENGTH" in environ:
            headers["content-length"] = environ["CONTENT_LENGTH"]
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        method = environ["REQUEST_METHOD"]
        try:
            signed_ok = _signature_ok(method, headers.get("host", ""), raw_uri, headers)
        except (KeyError, ValueError):
            signed_ok = False
        if not signed_ok:
            return _error(start_response, "403 Forbidden", "SignatureDoesNotMatch",
                          "The request signature we calculated does not match the signature "
                          "you provided.")  # fmt: skip
        issued = timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
        if time.time() > issued + int(query["X-Amz-Expires"]):
            return _error(start_response, "403 Forbidden", "AccessDenied", "Request has expired")
        checksum = headers.get("x-amz-checksum-sha256")
        if method == "PUT" and checksum is not None:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            actual = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if actual != checksum:
                return _error(start_response, "400 Bad Request", "BadDigest",
                              "The SHA256 you specified did not match the calculated "
                              "checksum.")  # fmt: skip
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


def main(argv: list[str]) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        create_backend_app,
    )
    from werkzeug.serving import WSGIRequestHandler, run_simple

    port = int(argv[0])
    app = StrictPresigned(DomainDispatcherApplication(create_backend_app))

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:
            return

    run_simple("127.0.0.1", port, app, threaded=True, request_handler=Quiet)


if __name__ == "__main__":
    main(sys.argv[1:])
