"""clipfarm-submit: submit many compilations from one manifest (CSV, JSON or JSONL).

    clipfarm-submit week47.csv --dry-run            check everything, submit nothing
    clipfarm-submit week47.csv                      upload local media, submit, print a table
    clipfarm-submit week47.jsonl --wait --out out/  ...and follow the jobs, download the videos

The board and token come from --board/--token or CLIPFARM_BOARD_URL/CLIPFARM_TOKEN (a submitter
token: ``board token create --role submitter --name NAME``). Every compilation gets a stable
idempotency key, so running the same manifest again creates no new jobs. The manifest formats
are described in submitter/manifest.py (JSON/JSONL) and submitter/manifest_csv.py (CSV), and in
the README.

Exit status: 0 all good; 1 the manifest has problems, or a job was rejected or (with --wait)
did not succeed; 2 the board could not be used (unreachable, bad token); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from submitter.board_client import BoardClient, BoardError
from submitter.follow import follow_jobs
from submitter.manifest import Manifest, read_manifest
from submitter.progress import ProgressBar, human_bytes
from submitter.submission import (
    Entry,
    idempotency_key,
    sha256_files,
    submit_body,
    submit_entries,
    upload_files,
)

DEFAULT_BOARD = "http://127.0.0.1:8000"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``clipfarm-submit``; returns the exit status."""
    args = _parser().parse_args(argv)
    manifest = read_manifest(args.manifest, format=args.format)
    for problem in manifest.problems:
        print(problem, file=sys.stderr)
    if manifest.problems:
        count = len(manifest.problems)
        print(
            f"{count} problem{'s' * (count != 1)} in {args.manifest}; "
            "nothing was uploaded or submitted",
            file=sys.stderr,
        )
        return 1
    _say(_overview(manifest))
    if args.dry_run:
        _say("the manifest is fine; nothing uploaded or submitted (--dry-run)")
        return 0
    if not args.token:
        _say("no token: pass --token or set CLIPFARM_TOKEN (a submitter token from "
             "`board token create --role submitter --name NAME`)")  # fmt: skip
        return 2
    entries = [Entry(item) for item in manifest.items]
    finished = True
    try:
        with BoardClient(args.board, args.token) as board:
            unique = _prepare(board, entries, args.key_prefix)
            bar = ProgressBar("submitting", len(unique))
            submit_entries(board, unique, chunk=args.chunk, bar=bar)
            bar.close(_submit_counts(unique))
            if args.wait:
                out = None if args.no_download else args.out
                finished = follow_jobs(
                    board, unique, out_dir=out, poll_s=args.poll, timeout_s=args.timeout
                )
    except BoardError as exc:
        _say(f"clipfarm-submit: {exc.message}")
        _print_table(entries, args.wait)
        return 2
    except KeyboardInterrupt:
        _say("interrupted; submitted jobs go on on the board")
        _print_table(entries, args.wait)
        return 130
    _print_table(entries, args.wait)
    return 0 if finished and _all_good(entries, waited=args.wait) else 1


def _prepare(board: BoardClient, entries: list[Entry], key_prefix: str) -> list[Entry]:
    """Hash and upload local files, key every compilation; returns the entries to submit (an
    identical compilation later in the manifest rides on the first one)."""
    files = list(dict.fromkeys(p for e in entries for p in e.item.local_files()))
    hashes: dict[Path, str] = {}
    if files:
        total = sum(p.stat().st_size for p in files)
        bar = ProgressBar("hashing", total, in_bytes=True)
        hashes = sha256_files(files, bar)
        bar.close()
        distinct = {h: p for p, h in hashes.items()}
        size = sum(p.stat().st_size for p in distinct.values())
        bar = ProgressBar("uploading", size, in_bytes=True)
        media, new = upload_files(board, {p: h for h, p in distinct.items()}, bar)
        bar.close(f"{len(media)} files, {new} new, {len(media) - new} already on the board")
    else:
        media = {}
    first: dict[str, Entry] = {}
    unique = []
    for entry in entries:
        entry.key = idempotency_key(entry.item, hashes, key_prefix)
        if entry.key in first:
            entry.same_as = first[entry.key]
            _say(f"note: {entry.item.label} (line {entry.item.line}) is the same compilation as "
                 f"line {entry.same_as.item.line}; it is submitted once")  # fmt: skip
            continue
        first[entry.key] = entry
        entry.body = submit_body(entry.item, entry.key, hashes, media)
        unique.append(entry)
    return unique


def _print_table(entries: list[Entry], waited: bool) -> None:
    """The summary on stdout; a compilation submitted once for several entries shows its job on
    each of them."""
    for entry in entries:
        if entry.same_as is not None:
            first = entry.same_as
            entry.status, entry.job, entry.error, entry.saved = (
                first.status, first.job, first.error, first.saved
            )  # fmt: skip
    if any(e.status for e in entries):
        print(summary_table(entries, waited=waited), flush=True)


def _all_good(entries: list[Entry], *, waited: bool) -> bool:
    if waited:
        return all(e.state == "succeeded" and e.error is None for e in entries)
    return all(e.status in (200, 201) for e in entries)


# ---------------------------------------------------------------- output


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _overview(manifest: Manifest) -> str:
    clips = sum(len(i.compilation.get("clips", [])) for i in manifest.items)
    files = {p for i in manifest.items for p in i.local_files()}
    size = sum(p.stat().st_size for p in files)
    count = len(manifest.items)
    return (
        f"{manifest.path}: {count} compilation{'s' * (count != 1)}, {clips} clips, "
        f"{len(files)} local files ({human_bytes(size)})"
    )


def _submit_counts(entries: list[Entry]) -> str:
    new = sum(e.status == 201 for e in entries)
    existing = sum(e.status == 200 for e in entries)
    rejected = sum(bool(e.status and e.status >= 400) for e in entries)
    return f"{new} new, {existing} existing, {rejected} rejected"


def _result(entry: Entry, waited: bool) -> str:
    job = entry.job
    if job is None:
        return f"rejected (HTTP {entry.status}): {entry.error}" if entry.status else "-"
    if job.state == "succeeded" and job.output is not None:
        text = f"{job.output.duration_s:.1f} s, {human_bytes(job.output.size)}"
        if entry.saved is not None:
            text += f" -> {entry.saved}"
        elif entry.error:
            text += f" (download failed: {entry.error})"
        return text
    if job.state in ("failed", "cancelled"):
        return job.error or job.state
    if entry.same_as is not None:
        return f"same as line {entry.same_as.item.line}"
    if not waited:
        return "new job" if entry.status == 201 else "submitted before (idempotency key)"
    return f"{job.progress * 100:.0f}%"


def summary_table(entries: list[Entry], *, waited: bool) -> str:
    """One row per compilation: manifest line, job id, state, title, and the result or error."""
    rows = [("LINE", "JOB", "STATE", "TITLE", "RESULT")]
    for entry in entries:
        job_id = entry.job.id if entry.job else "-"
        rows.append(
            (str(entry.item.line), job_id, entry.state, entry.title[:40], _result(entry, waited))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
             for row in rows]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipfarm-submit",
        description="Bulk-submit compilations to a clipfarm board from a CSV, JSON or JSONL "
        "manifest. Re-running the same manifest never creates duplicate jobs.",
    )
    parser.add_argument("manifest", type=Path, help="the manifest file (.csv, .json, .jsonl)")
    parser.add_argument("--format", choices=["csv", "json", "jsonl"], help="default: by suffix")
    parser.add_argument(
        "--board",
        default=os.environ.get("CLIPFARM_BOARD_URL") or DEFAULT_BOARD,
        help=f"board URL (default: $CLIPFARM_BOARD_URL or {DEFAULT_BOARD})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CLIPFARM_TOKEN"),
        help="submitter token (default: $CLIPFARM_TOKEN)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check the manifest and files; submit nothing"
    )
    parser.add_argument(
        "--key-prefix",
        default="",
        help="prefix of every idempotency key (a new prefix submits the same manifest anew)",
    )
    parser.add_argument(
        "--chunk", type=int, default=200, help="jobs per batch request (at most 500)"
    )
    parser.add_argument("--wait", action="store_true", help="follow the jobs until they finish")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("clipfarm-output"),
        help="with --wait: where to save the videos (default: ./clipfarm-output)",
    )
    parser.add_argument(
        "--no-download", action="store_true", help="with --wait: don't download the videos"
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between job checks")
    parser.add_argument(
        "--timeout", type=float, help="with --wait: stop waiting after this many seconds"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
