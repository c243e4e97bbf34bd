"""Follow a stream's captions over WebSocket and print finals; reconnects with `since`.

    python clients/examples/ws_follow.py ws://127.0.0.1:8765/ws?stream=main [--token T] [--count N]

Prints one line per final (`seq<TAB>text`), so nothing is missed or duplicated across restarts of
this script or of the connection (it passes the last seq it saw as `since`). With protocol 2 an
utterance may come as several finals (the last has `last: true`); a display would append them and
replace its live tail with each partial. When the daemon restarts (`hello.session` changes), `seq`
starts again at 1, so `since` is reset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets


def with_since(url: str, since: int, token: str | None) -> str:
    parts = urlsplit(url)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    query["since"] = str(since)
    if token:
        query["token"] = token
    return urlunsplit(parts._replace(query=urlencode(query)))


async def follow(url: str, token: str | None, count: int | None) -> None:
    since, seen, session = 0, 0, None
    while True:
        try:
            async with websockets.connect(with_since(url, since, token)) as ws:
                async for message in ws:
                    event = json.loads(message)
                    if event.get("type") == "hello":
                        restarted = session is not None and event.get("session") != session
                        session = event.get("session")
                        if restarted and since:
                            since = 0  # a new daemon run numbers its finals from 1: ask for all
                            break
                        continue
                    if event.get("type") == "gap":  # older than the server's memory window
                        missed = f"{event['since'] + 1}..{event['first_seq'] - 1}"
                        print(f"finals {missed} are only in {event['transcript']}", file=sys.stderr)
                    if event.get("type") != "final" or event["seq"] <= since:
                        continue
                    since = event["seq"]
                    print(f"{event['seq']}\t{event['text']}", flush=True)
                    seen += 1
                    if count is not None and seen >= count:
                        return
        except (OSError, websockets.ConnectionClosed) as e:
            print(f"disconnected ({e}); reconnecting with since={since}", file=sys.stderr)
            await asyncio.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/ws")
    parser.add_argument("--token")
    parser.add_argument("--count", type=int, help="stop after this many finals")
    args = parser.parse_args()
    asyncio.run(follow(args.url, args.token, args.count))


if __name__ == "__main__":
    main()
