#!/usr/bin/env python3
"""Echo server built on the `websockets` library's Sans-I/O protocol (its real framing and
handshake), with an I/O loop of our own that uses the vectored syscalls the other servers never
make: `--io vectored` reads with readv(2) and writes with writev(2); `--io msg` uses recvmsg(2)
and sendmsg(2). Outgoing bytes are cut into many small iovecs (1, 2, 3, 5, 8, ... bytes), so
frame headers straddle iovec boundaries.

    python3 sansio_echo.py [PORT] --io vectored|msg [--dup2]

With ``--dup2`` each accepted socket is moved to another fd (``dup2`` to fd 200 + n, then the
accepted fd is closed) before a single byte is read: the connection lives on an fd that never
came out of ``accept``.

Prints ``READY <port>`` once listening; one thread per connection; data frames are echoed frame
for frame (same opcode and FIN); pings are answered and closes completed by the library.
"""

import argparse
import os
import socket
import sys
import threading

from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

SIZES = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987]
IOV_MAX = 1024


def iovecs(data):
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = SIZES[i % len(SIZES)] if len(out) < IOV_MAX - 1 else len(data) - pos
        out.append(data[pos:pos + n])
        pos += n
        i += 1
    return out


def read(sock, mode):
    if mode == "vectored":
        bufs = [bytearray(7), bytearray(1000), bytearray(64 * 1024)]
        n = os.readv(sock.fileno(), bufs)
        return bytes(b"".join(bufs)[:n])
    data, _, _, _ = sock.recvmsg(64 * 1024)
    return data


def write(sock, mode, data):
    while data:
        vec = iovecs(data)
        n = os.writev(sock.fileno(), vec) if mode == "vectored" else sock.sendmsg(vec)
        data = data[n:]


def serve(sock, mode):
    proto = ServerProtocol()
    try:
        while True:
            data = read(sock, mode)
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            for event in proto.events_received():
                if isinstance(event, Request):
                    proto.send_response(proto.accept(event))
                elif proto.state is not State.OPEN:
                    pass  # a close arrived in the same read: nothing more may be sent
                elif event.opcode == Opcode.TEXT:
                    proto.send_text(event.data, fin=event.fin)
                elif event.opcode == Opcode.BINARY:
                    proto.send_binary(event.data, fin=event.fin)
                elif event.opcode == Opcode.CONT:
                    proto.send_continuation(event.data, fin=event.fin)
            out = proto.data_to_send()
            for chunk in out:
                if chunk:
                    write(sock, mode, chunk)
                else:
                    sock.shutdown(socket.SHUT_WR)
            if not data:
                break
    except (ConnectionError, OSError):
        pass
    finally:
        sock.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", nargs="?", type=int, default=0)
    ap.add_argument("--io", choices=["vectored", "msg"], required=True)
    ap.add_argument("--dup2", action="store_true")
    args = ap.parse_args()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(128)
    print(f"READY {srv.getsockname()[1]}", flush=True)
    n = 0
    while True:
        conn, _ = srv.accept()
        if args.dup2:
            target = 200 + n % 800
            n += 1
            os.dup2(conn.fileno(), target)
            conn.close()
            conn = socket.socket(fileno=target)
        threading.Thread(target=serve, args=(conn, args.io), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
