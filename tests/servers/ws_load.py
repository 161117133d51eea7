#!/usr/bin/env python3
"""Bounded WebSocket load generator for wsguard's demo (and ad-hoc benchmarks).

    python3 ws_load.py --port P [--host H] [--connections N] [--rate MSG_PER_S]
                       [--duration S] [--lifetime S] [--abort-fraction F] [--size BYTES]
                       [--text-fraction F] [--compression] [--seed N] [--tls]

Keeps N client connections open against an echo server (for example ws_echo.js) and sends
messages at a fixed total rate, alternating text and binary at random, and reads the echoes.
Each connection lives for a random time (exponential, mean --lifetime seconds); then it is
either closed cleanly (close frame 1000) or, with probability --abort-fraction, aborted (TCP
reset, no close frame) and replaced by a new one. When --duration is over, all remaining
connections are closed cleanly and a summary line `SUMMARY {json}` is printed. SIGTERM/SIGINT
end the run early the same way. The run never exceeds --duration + 15 s.
"""

import argparse
import asyncio
import json
import random
import signal
import socket
import ssl
import struct
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


class Stats:
    def __init__(self):
        self.opened = 0
        self.connect_failures = 0
        self.closed_clean = 0
        self.aborted = 0
        self.closed_by_server = 0
        self.sent_msgs = 0
        self.sent_bytes = 0
        self.recv_msgs = 0
        self.recv_bytes = 0


def abort(ws):
    """Drop the connection without a close frame, with a TCP RST (SO_LINGER 0)."""
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    ws.transport.abort()


async def reader(ws, stats):
    try:
        async for msg in ws:
            stats.recv_msgs += 1
            stats.recv_bytes += len(msg)
    except ConnectionClosed:
        pass


def payload(rng, args):
    n = rng.randint(1, max(1, 2 * args.size))
    if rng.random() < args.text_fraction:
        return "x" * n
    return rng.randbytes(n)


async def worker(idx, args, rng, stats, stop, deadline):
    interval = args.connections / args.rate if args.rate > 0 else None
    scheme = "wss" if args.tls else "ws"
    uri = args.url or f"{scheme}://{args.host}:{args.port}/"
    tls = None
    if args.tls:
        # Load only: the server's test certificate is not checked.
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            ws = await connect(
                uri,
                ssl=tls,
                compression="deflate" if args.compression else None,
                ping_interval=None,
                open_timeout=5,
                close_timeout=2,
                max_size=None,
            )
        except (OSError, asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - count and retry
            stats.connect_failures += 1
            if stats.connect_failures <= 3:
                print(f"ws_load: connect failed: {e!r}", file=sys.stderr)
            await asyncio.sleep(0.5)
            continue
        stats.opened += 1
        read_task = asyncio.create_task(reader(ws, stats))
        life_end = deadline
        if args.lifetime > 0:
            life_end = min(deadline, time.monotonic() + rng.expovariate(1.0 / args.lifetime))
        # Spread the first sends of the connections over one interval.
        next_send = time.monotonic() + (rng.random() * interval if interval else 0)
        ended_by_server = False
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= life_end:
                    break
                if interval is None:
                    wake = life_end
                else:
                    if now >= next_send:
                        msg = payload(rng, args)
                        await ws.send(msg)
                        stats.sent_msgs += 1
                        stats.sent_bytes += len(msg)
                        next_send += interval
                        continue
                    wake = min(life_end, next_send)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, wake - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
                if read_task.done():
                    ended_by_server = True
                    break
        except ConnectionClosed:
            ended_by_server = True

        final = stop.is_set() or time.monotonic() >= deadline
        if ended_by_server:
            stats.closed_by_server += 1
        elif not final and rng.random() < args.abort_fraction:
            abort(ws)
            stats.aborted += 1
        else:
            try:
                await ws.close(1000)
            except Exception:  # noqa: BLE001 - a failed close is still a close attempt
                pass
            stats.closed_clean += 1
        try:
            await asyncio.wait_for(read_task, timeout=3)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            read_task.cancel()
        if not final:
            await asyncio.sleep(0.05)


async def main(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = Stats()
    rng = random.Random(args.seed)
    start = time.monotonic()
    deadline = start + args.duration
    print(
        f"ws_load: {args.connections} connections, {args.rate} msg/s, {args.duration} s, "
        f"mean lifetime {args.lifetime} s, abort fraction {args.abort_fraction}",
        flush=True,
    )
    tasks = [
        asyncio.create_task(
            worker(i, args, random.Random(rng.random()), stats, stop, deadline)
        )
        for i in range(args.connections)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.duration + 15)
    except asyncio.TimeoutError:
        print("ws_load: hard time limit reached", file=sys.stderr)
    summary = dict(vars(stats))
    summary["elapsed_s"] = round(time.monotonic() - start, 3)
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description="bounded WebSocket load generator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--url", help="full ws:// URL (overrides --host/--port)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rate", type=float, default=200.0, help="messages per second, all connections")
    p.add_argument("--duration", type=float, default=30.0, help="seconds")
    p.add_argument("--lifetime", type=float, default=10.0,
                   help="mean connection lifetime in seconds (0: whole run)")
    p.add_argument("--abort-fraction", type=float, default=0.25,
                   help="share of connection ends that are aborts (RST) instead of close frames")
    p.add_argument("--size", type=int, default=64, help="mean message size in bytes")
    p.add_argument("--text-fraction", type=float, default=0.5)
    p.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tls", action="store_true", help="wss:// without checking the certificate")
    args = p.parse_args(argv)
    if not args.url and not args.port:
        p.error("--port (or --url) is required")
    if args.connections < 1 or args.duration <= 0 or args.rate < 0:
        p.error("need --connections >= 1, --duration > 0, --rate >= 0")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
