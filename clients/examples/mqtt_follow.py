"""Follow captions over MQTT and print finals, dropping duplicates by (stream, seq).

    python clients/examples/mqtt_follow.py --host 127.0.0.1 --port 1883 --prefix streamer

QoS 1 can deliver a message twice after a broker restart; `seq` has no gaps, so a subscriber
can both drop repeats and notice a missing final.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiomqtt


async def follow(host: str, port: int, prefix: str, count: int | None) -> None:
    last: dict[str, int] = {}
    seen = 0
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(f"{prefix}/+/final", qos=1)
        async for message in client.messages:
            event = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            stream, seq = event["stream"], event["seq"]
            if seq <= last.get(stream, 0):
                continue  # a QoS 1 redelivery
            if seq != last.get(stream, 0) + 1 and stream in last:
                print(f"# {stream}: finals {last[stream] + 1}..{seq - 1} missed")
            last[stream] = seq
            print(f"{stream}\t{seq}\t{event['text']}", flush=True)
            seen += 1
            if count is not None and seen >= count:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="streamer")
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    asyncio.run(follow(args.host, args.port, args.prefix, args.count))


if __name__ == "__main__":
    main()
