#!/usr/bin/env python3
"""Unmodified Server-Sent Events server on aiohttp (PyPI), for wsguard's tests.

    python3 sse_aiohttp.py [PORT]

Prints `READY <port>` on stdout once listening on 127.0.0.1. Every GET is answered with
`Content-Type: text/event-stream` through aiohttp's `StreamResponse` (chunked by aiohttp); the
query string is the script shared with sse_node.js (see there and tests/src/sse.rs): `b` (hex
body), `cuts` (offsets where a new write begins, or `every` byte, each drained on its own ~2 ms apart) and `end`
(`server` ends the response after the body, `client` holds it open until the client goes away).
"""

import asyncio
import signal
import sys

from aiohttp import web


def script(request):
    body = bytes.fromhex(request.query.get("b", ""))
    given = request.query.get("cuts", "")
    cuts = list(range(len(body))) if given == "every" else [int(c) for c in given.split(",") if c]
    bounds = [0] + [c for c in cuts if 0 < c < len(body)] + [len(body)]
    writes = [body[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    return writes, request.query.get("end", "client")


async def stream(request):
    writes, end = script(request)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        for w in writes:
            await resp.write(w)
            await asyncio.sleep(0.002)
        if end == "server":
            await resp.write_eof()
            return resp
        # end=client: hold the stream open until the client goes away.
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.02)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


async def main(port):
    app = web.Application()
    app.router.add_get("/{tail:.*}", stream)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sock = site._server.sockets[0]
    print(f"READY {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
