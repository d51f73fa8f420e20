"""clipfarm's submitter tools: ``clipfarm-submit`` (``submitter.cli``) reads a manifest
(``manifest``, ``manifest_csv``, ``manifest_check``), uploads and submits it (``submission``
through ``board_client``) and, with ``--wait``, follows the jobs and downloads the videos
(``follow``, ``progress``).

They talk to a board through its public HTTP API only, like any other client would.
"""
