"""clipfarm's command-line helpers: bulk submit (``clipfarm-submit``) and the demo farm.

They talk to a board through its public HTTP API only, like any other client would.
"""
