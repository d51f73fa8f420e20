"""``board``: serve, migrate, tokens, limits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from board.config import ConfigError, ensure_data_dir, load_config


def _serve(args: argparse.Namespace) -> int:
    import gc

    import uvicorn

    from board.app import create_app
    from board.infra.http_limits import server_options
    from board.infra.migrate import upgrade

    config = load_config(data_dir=args.data_dir, host=args.host, port=args.port)

    ensure_data_dir(config)
    if not args.no_migrate:
        upgrade(config.database_url)  # the schema is alembic's: bring it to head before serving
    print(
        f"board serving on http://{config.host}:{config.port} "
        f"(database {config.database_url.split('@')[-1]}, data {config.data_dir})",
        flush=True,
    )
    options = dict(
        host=config.host,
        port=config.port,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=5,
        **server_options(config),
    )
    app = create_app(config)
    # What is built by now (modules, the app, its routes: two thirds of the objects the collector
    # tracks under a fleet) lives as long as the process: freeze it out of the collector's full
    # passes, which otherwise scan it all and stall every request for tens of milliseconds
    # (BENCHMARKS.md, "Fleet").
    gc.collect()
    gc.freeze()
    uvicorn.run(app, **options)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from board.infra.migrate import upgrade

    config = load_config(data_dir=args.data_dir)

    ensure_data_dir(config)
    upgrade(config.database_url, args.revision)
    print(f"database at {config.database_url.split('@')[-1]} is at {args.revision}")
    return 0


def _with_db(args: argparse.Namespace, work) -> int:
    from board.infra.db import Database
    from board.infra.migrate import upgrade

    config = load_config(data_dir=args.data_dir)

    ensure_data_dir(config)
    upgrade(config.database_url)

    async def run() -> int:
        db = Database(config.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _token_create(args: argparse.Namespace) -> int:
    from board.domain.tokens import create_token

    async def work(db) -> int:
        token = await create_token(db, role=args.role, name=args.name)
        print(f"created {args.role} token {args.name!r}; it is shown only once:", file=sys.stderr)
        print(token)
        return 0

    return _with_db(args, work)


def _token_revoke(args: argparse.Namespace) -> int:
    from board.domain.tokens import revoke_token

    async def work(db) -> int:
        await revoke_token(db, args.name)
        print(f"revoked token {args.name!r}")
        return 0

    return _with_db(args, work)


def _limits_set(args: argparse.Namespace) -> int:
    from board.config import load_config as _load
    from board.domain.limits import LIMIT_FIELDS
    from board.domain.submitters import set_limits
    from board.infra.storage import LocalStorage
    from board.state import BoardState
    from wire import Limits

    limits = Limits(**{name: getattr(args, name) for name in LIMIT_FIELDS})

    async def work(db) -> int:
        config = _load(data_dir=args.data_dir)
        board = BoardState(config=config, db=db, storage=LocalStorage(config.data_dir / "files"))
        view = await set_limits(board, args.name, limits)
        print(view.limits)
        return 0

    return _with_db(args, work)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="board", description="clipfarm job board")
    parser.add_argument("--data-dir", help="data directory (default $BOARD_DATA_DIR or ./data)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the board (migrates the database first)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="warning")
    serve.add_argument("--access-log", action="store_true")
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema first")
    serve.set_defaults(run=_serve)

    migrate = sub.add_parser("migrate", help="upgrade the database schema (alembic)")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(run=_migrate)

    token = sub.add_parser("token", help="create or revoke tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token (printed alone on the last line)")
    create.add_argument("--role", required=True, choices=["admin", "submitter", "farmhand"])
    create.add_argument("--name", required=True)
    create.set_defaults(run=_token_create)
    revoke = token_sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.set_defaults(run=_token_revoke)

    limits = sub.add_parser("limits", help="submitter limits")
    limits_sub = limits.add_subparsers(dest="limits_command", required=True)
    set_ = limits_sub.add_parser("set", help="set a submitter's limits (omitted = no limit)")
    set_.add_argument("name")
    set_.add_argument("--max-width", type=int)
    set_.add_argument("--max-height", type=int)
    set_.add_argument("--max-fps", type=float)
    set_.add_argument("--max-clips", type=int)
    set_.add_argument("--forced-watermark", metavar="MEDIA_ID")
    set_.add_argument("--monthly-render-seconds", type=float)
    set_.add_argument("--storage-quota-bytes", type=int)
    set_.set_defaults(run=_limits_set)
    return parser


# What the board writes (the database and its -wal/-shm, media, outputs, their folders) is the
# submitters' and the board's own business: this user's only, 0600 files and 0700 folders.
PRIVATE_UMASK = 0o077


def main(argv: list[str] | None = None) -> int:
    from board.errors import BoardError

    os.umask(PRIVATE_UMASK)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, BoardError) as exc:
        print(f"board: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
