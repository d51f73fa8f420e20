"""Every route of the board's HTTP API, named once.

Templates use ``{name}`` placeholders. Clients fill them with :func:`path`; the board's
controllers declare the same templates (``board.api.routing.typed`` adds Litestar's ``:str``
converters), so a client and the board cannot drift apart on a path. The whole conversation is
described in ``docs/architecture.md`` ("Wire routes").
"""

from __future__ import annotations

from urllib.parse import quote

API = "/api/v1"

# ---------------------------------------------------------------- operations (no token)
HEALTH = "/health"
READY = "/ready"
METRICS = "/metrics"
SCHEMA = "/schema"

# ---------------------------------------------------------------- farmhands
CLAIM = f"{API}/farmhand/claim"
FARMHAND_STATUS = f"{API}/farmhand/status"
HELD_JOB = f"{API}/farmhand/jobs/{{job_id}}"
JOB_CONTEXT = f"{HELD_JOB}/context"
JOB_HEARTBEAT = f"{HELD_JOB}/heartbeat"
JOB_UPLOAD = f"{HELD_JOB}/output"  # PUT the rendered file, GET how much arrived
# POST: begin or resume sending the output straight to object storage (presigned parts)
JOB_UPLOAD_MULTIPART = f"{HELD_JOB}/output/multipart"
JOB_UPLOAD_THUMBNAIL = f"{HELD_JOB}/thumbnail"
JOB_COMPLETE = f"{HELD_JOB}/complete"
JOB_FAIL = f"{HELD_JOB}/fail"
JOB_RELEASE = f"{HELD_JOB}/release"
JOB_PIECE = f"{HELD_JOB}/pieces/{{piece_id}}"  # a join downloads the pieces it joins

# ---------------------------------------------------------------- submitters
JOBS = f"{API}/jobs"
JOBS_BATCH = f"{JOBS}/batch"
JOB = f"{JOBS}/{{job_id}}"
JOB_HISTORY = f"{JOB}/history"
JOB_EVENTS = f"{JOB}/events"
JOB_CANCEL = f"{JOB}/cancel"
JOB_RETRY = f"{JOB}/retry"
JOB_PRIORITY = f"{JOB}/priority"
JOB_OUTPUT = f"{JOB}/output"
JOB_THUMBNAIL = f"{JOB}/thumbnail"
MEDIA = f"{API}/media"
MEDIA_ITEM = f"{MEDIA}/{{media_id}}"
MEDIA_CONTENT = f"{MEDIA_ITEM}/content"
MEDIA_UPLOADS = f"{MEDIA}/uploads"  # POST: begin an upload (straight to object storage)
MEDIA_UPLOAD_FINISH = f"{MEDIA_UPLOADS}/{{upload_id}}/finish"  # POST: verify, probe, keep

# ---------------------------------------------------------------- admins
TOKENS = f"{API}/tokens"
TOKEN = f"{TOKENS}/{{name}}"
FARMHANDS = f"{API}/farmhands"
FARMHAND_ACTION = f"{FARMHANDS}/{{name}}/{{action}}"
SUBMITTERS = f"{API}/submitters"
SUBMITTER = f"{SUBMITTERS}/{{name}}"
SUBMITTER_LIMITS = f"{SUBMITTER}/limits"


def path(template: str, **params: str) -> str:
    """``template`` with its placeholders filled, each value quoted as one path segment:
    ``path(JOB_HEARTBEAT, job_id="j1")`` → ``/api/v1/farmhand/jobs/j1/heartbeat``."""
    return template.format(**{name: quote(str(value), safe="") for name, value in params.items()})
