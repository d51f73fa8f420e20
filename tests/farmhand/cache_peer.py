"""A second farmhand process sharing a media cache folder, for the cache tests.

    python -m tests.farmhand.cache_peer CACHE_DIR BASE_URL REF_JSON [--hold]

Fetches the board media described by REF_JSON into CACHE_DIR and prints "fetched PATH". With
--hold it keeps the entry pinned until a line arrives on stdin, then prints "released".
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import msgspec

from farmhand.cache import MediaCache
from farmhand.fetch import fetch_media
from wire import MediaRef


async def main(cache_dir: str, base_url: str, ref_json: str, hold: bool) -> None:
    cache = MediaCache(Path(cache_dir), max_bytes=1024**3)
    ref = msgspec.json.decode(ref_json, type=MediaRef)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        with cache.pin_set() as pins:
            path = await fetch_media(client, ref, {}, cache=cache, pins=pins)
            print(f"fetched {path}", flush=True)
            if hold:
                await asyncio.to_thread(sys.stdin.readline)
    print("released", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], "--hold" in sys.argv))
