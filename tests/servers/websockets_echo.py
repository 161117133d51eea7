#!/usr/bin/env python3
"""Unmodified Python `websockets` echo server for wsguard's tests.

    python3 websockets_echo.py [PORT] [--host H] [--ping-interval S] [--compression]
                               [--max-size BYTES] [--tls CERT KEY]

PORT 0 (the default) picks an ephemeral port. Environment fallbacks: WS_ECHO_HOST,
WS_ECHO_PORT. Prints ``READY <port>`` on stdout once listening. Every message is echoed back
with the same type (str stays text, bytes stays binary).

Unlike the library's defaults, automatic pings are OFF (websockets pings every 20 s by default,
which would make frame counts depend on timing) unless --ping-interval is given, and
permessage-deflate is OFF unless --compression is given. --tls serves wss:// with the given
PEM certificate and key (Python's ssl module: the system's OpenSSL). Exits 0 on SIGTERM/SIGINT, closing the
clients with 1001 (going away).
"""

import argparse
import asyncio
import os
import signal
import ssl
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main(args):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None)
        )
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
    async with serve(
        echo,
        args.host,
        args.port,
        ssl=context,
        ping_interval=args.ping_interval,
        compression="deflate" if args.compression else None,
        max_size=args.max_size,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"READY {port}", flush=True)
        await stop
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description="websockets echo server (wsguard tests)")
    p.add_argument("port", nargs="?", type=int, default=int(os.environ.get("WS_ECHO_PORT", "0")))
    p.add_argument("--host", default=os.environ.get("WS_ECHO_HOST", "127.0.0.1"))
    p.add_argument(
        "--ping-interval",
        type=float,
        default=None,
        help="seconds between automatic pings (default: none)",
    )
    p.add_argument(
        "--compression", action="store_true", help="enable permessage-deflate"
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=16 * 1024 * 1024,
        help="largest accepted message in bytes (default 16 MiB)",
    )
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve wss:// (PEM files)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
