"""Count people from a webcam or a video file with framebroker's live client.

The server reads the camera or the file and runs the people counter on it:
    framebroker serve --source door=0            (a webcam; or --source door=clip.mp4)
and this prints the counts as they change:
    python examples/count_people.py [ws://127.0.0.1:8000/ws/live] [door]
"""

import asyncio
import sys

from framebroker.client import LiveClient


async def main(url: str, source: str | None) -> None:
    shown = None
    async with LiveClient(url, source=source) as live:  # reconnects by itself
        async for message in live:
            if message.type == "stats" and (message.count_in, message.count_out) != shown:
                shown = (message.count_in, message.count_out)
                print(f"in {message.count_in}  out {message.count_out}", flush=True)
            elif message.type == "event":
                print(f"high traffic {message.status} at {message.start_time}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    url = args[0] if args else "ws://127.0.0.1:8000/ws/live"
    asyncio.run(main(url, args[1] if len(args) > 1 else None))
