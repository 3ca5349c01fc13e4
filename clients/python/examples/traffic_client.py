"""The ``000_…`` example on the uip-realtime client: traffic flow for two
cameras and every accident, with reconnection, resume and heartbeats built in.

    python traffic_client.py ws://127.0.0.1:8787 <subscriber token>
"""

import asyncio
import sys

from uip_realtime import Client, UipError


def on_traffic_update(event: dict) -> None:
    d = event["data"]
    print(f"{d['camera_id']}: {d['intensity']} vehicles, {d['average_speed']} km/h ({d['congestion_level']})")


def on_new_accident(event: dict) -> None:
    if event["type"] == "accidents.new":
        d = event["data"]
        print(f"accident {d['id']}: {d['severity']} at {d['location']}")


def on_error(error: UipError) -> None:
    print(f"error {error.code}: {error.message}", file=sys.stderr)


async def main(url: str, token: str) -> None:
    client = Client(url, token, on_error=on_error, on_state=lambda s: print(f"[{s.value}]"))
    client.subscribe("traffic.flow", on_traffic_update, filters={"cameras": ["CAM_001", "CAM_002"]})
    client.subscribe("accidents", on_new_accident)
    await client.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
