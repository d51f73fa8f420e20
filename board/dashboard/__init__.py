"""The operator's dashboard: server-rendered pages served by the board at ``/``, kept live over
Server-Sent Events, with plain JavaScript and one hand-written stylesheet (no build step, no CDN).

``board.dashboard.routes.ROUTES`` are the handlers the app factory mounts. This module imports
nothing, so ``board.api.auth`` can use ``board.dashboard.csrf`` without an import cycle.
"""
