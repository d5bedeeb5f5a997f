#!/usr/bin/env python3
"""A small cache manager: keeps a local cache of a (simulated) database coherent.

    python examples/cache_manager.py ws://127.0.0.1:4000/ws
    python examples/cache_manager.py ws://127.0.0.1:4000/ws --pattern 'user:*' --keys user:1,user:2

Then, in another terminal, invalidate something and watch the cache drop and reload it:

    curl -s -X POST localhost:4000/invalidate/key \\
      -H 'content-type: application/json' -d '{"keys": ["user:1"], "triggered_by": "me"}'

Every second the "application" reads its keys through ``get_or_fill`` (a hit costs nothing, a
miss loads from the database under the fill guard). Stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

try:
    from invalidator_client import CacheClient, ConnectError
except ImportError:  # running from a checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from invalidator_client import CacheClient, ConnectError


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


class Database:
    """Stands in for the source of truth: every load returns a new version."""

    def __init__(self) -> None:
        self.loads = 0

    async def load(self, key: str) -> str:
        await asyncio.sleep(0.02)  # a query
        self.loads += 1
        return f"{key}@v{self.loads}"


def on_event(frame: dict) -> None:
    if frame["type"] == "invalidate":
        what = f"pattern {frame['pattern']!r} ({frame['pattern_type']})" if frame.get("pattern") else "keys"
        soft = " soft" if frame.get("soft") else ""
        tags = f" tags={frame['tags']}" if frame.get("tags") else ""
        say(f"invalidate{soft} seq={frame['seq']} {what} keys={frame.get('keys')}{tags}")
    elif frame["type"] == "reset":
        say(f"reset ({frame.get('reason')}): local cache cleared")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", nargs="?", default="ws://127.0.0.1:4000/ws", help="server WebSocket URL")
    ap.add_argument("--pattern", action="append", help="subscription pattern (repeatable; default user:*)")
    ap.add_argument("--keys", default="user:1,user:2,user:3", help="comma-separated keys the app reads")
    ap.add_argument("--token", help="bearer token (a token with the subscribe scope)")
    ap.add_argument("--max-entries", type=int, default=10_000)
    ap.add_argument("--max-stale", type=float, default=30.0, help="seconds a soft-invalidated entry may be served")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between application reads")
    ap.add_argument("--seconds", type=float, help="stop after this long (default: run until Ctrl-C)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    keys = [k for k in args.keys.split(",") if k]
    db = Database()
    client = CacheClient(
        args.url,
        token=args.token,
        subscriptions=args.pattern or ["user:*"],
        max_entries=args.max_entries,
        max_stale=args.max_stale,
        on_event=on_event,
    )
    try:
        await client.start()
    except ConnectError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # Windows
            pass
    if args.seconds is not None:
        loop.call_later(args.seconds, stop.set)

    st = client.status
    say(f"ready: node={st.node_id} epoch={st.epoch} seq={st.seq} subscriptions={[s['pattern'] for s in client.subscriptions]}")
    last = {}
    try:
        while not stop.is_set():
            for key in keys:
                value = await client.get_or_fill(key, db.load)
                if last.get(key) != value:
                    say(f"read {key} = {value}")
                    last[key] = value
            st = client.status
            if not st.connected:
                say("(disconnected: serving the cache, reconnecting in the background)")
            try:
                await asyncio.wait_for(stop.wait(), args.interval)
            except asyncio.TimeoutError:
                pass
    finally:
        st = client.status
        say(f"stopping: {len(client.cache)} cached, {db.loads} loads, {st.events} events, {st.resets} resets, seq={st.seq}")
        await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
