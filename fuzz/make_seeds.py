#!/usr/bin/env python3
"""Writes the seed corpus (corpus/<target>/seed-*). Input layout: see src/lib.rs."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))

def frame(op, payload=b"", fin=True, mask=None, rsv1=False, force=None):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    m = 0x80 if mask else 0
    n = len(payload)
    if force == 64 or (force is None and n > 0xFFFF):
        h = bytes([b0, m | 127]) + struct.pack(">Q", n)
    elif force == 16 or (force is None and n >= 126):
        h = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, m | n])
    if mask:
        h += bytes(mask)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return h + payload

def close(code=None, reason=b"", mask=None):
    return frame(0x8, (struct.pack(">H", code) + reason) if code is not None else b"", mask=mask)

def head(flags, sizes, stream):
    assert len(sizes) <= 7
    return bytes([flags | (len(sizes) << 1)]) + bytes(sizes) + stream

def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

M = [0x37, 0xFA, 0x21, 0x3D]
chat = (frame(0x1, b"hello", mask=M) + frame(0x9, b"ping", mask=[1, 2, 3, 4])
        + frame(0x2, bytes(range(200)), fin=False, mask=M) + frame(0xA, b"", mask=M)
        + frame(0x0, b"tail", mask=[9, 8, 7, 6]) + close(1000, b"bye", mask=[0xAA, 0xBB, 0xCC, 0xDD]))
write("frame_split", "client-chat", head(0, [0, 2, 13], chat))
write("frame_split", "client-chat-bytewise", head(0, [], chat))
server = (frame(0x1, b"x" * 125) + frame(0x2, b"\0" * 126) + frame(0x9, b"")
          + frame(0x2, b"\1" * 300, force=64) + frame(0x1, b"s", force=16) + close(4001) + close())
write("frame_split", "server-boundaries", head(0, [6, 1, 255], server))
# 65535 and 65536 declared, only the start of the payload present (keeps the seed small).
write("frame_split", "big-truncated", head(0, [254, 3], frame(0x2, b"\7" * 65535)[:200]))
write("frame_split", "big64-truncated", head(0, [15], frame(0x2, b"\7" * 65536, mask=M)[:100]))
deflate = frame(0x1, b"\x4a\xcd\xc9\xc9\x07\x00", rsv1=True, mask=M) + frame(0x2, b"zz", rsv1=True, fin=False) + frame(0x0, b"z")
write("frame_split", "deflate", head(1, [1, 4], deflate))
write("frame_split", "desync", head(0, [3], frame(0x1, b"ok") + bytes([0x83, 0x00]) + frame(0x1, b"never")))
write("frame_split", "huge-length", head(0, [5], bytes([0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]) + b"abc"))

req = (b"GET /chat HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
       b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
write("http_scan", "request", head(0, [0, 6, 30], req + frame(0x1, b"hi", mask=M)))
write("http_scan", "request-bytewise", head(0, [], req))
resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
write("http_scan", "response-101", head(1, [2, 9], resp + frame(0x1, b"hello")))
write("http_scan", "response-400", head(1, [4], b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
write("http_scan", "plain-get", head(0, [7], b"GET /index.html HTTP/1.1\nHost: a\nAccept: */*\n\n"))
write("http_scan", "not-http", head(0, [1], b"\x16\x03\x01\x02\x00\x01\x00"))

# config_parse: TOML text as the agent reads it.
ROOT = os.path.dirname(HERE)
with open(os.path.join(ROOT, "config", "wsguard.toml"), "rb") as f:
    write("config_parse", "shipped", f.read())
write("config_parse", "empty", b"")
write("config_parse", "small", b'[agent]\ninterval = "2s"\nstate_dir = "/var/lib/x"\n[api]\nlisten = "127.0.0.1:9595"\n'
      b'[probe]\nports = [8080, 9000]\nprocesses = ["node"]\nmax_connections = 16\nring_buffer_bytes = 4096\n')
write("config_parse", "client-key", b'[probe.client_key]\nquery = "user"\nhash = true\n[limits]\n'
      b'per_client_connections = 5\nidle_after = "1m"\nstall_after = "10s"\n')
write("config_parse", "history", b'[history]\nmemory_snapshots = 0\nretention = "1d"\nfull_resolution = "1h"\n'
      b'downsample_interval = "5m"\n')
write("config_parse", "bad-value", b'[probe]\nring_buffer_bytes = 5000\n')
write("config_parse", "bad-key", b'[agnt]\ninterval = 5\n')

# api_inputs: byte 0 % 4 = 0 `since`, 1 matcher, 2-3 request with method (b0 / 4) % 5
# (GET, POST, PUT, DELETE, PATCH); the request's first line is the URI, the rest the body.
def req(method, uri, body=b"", auth=False):
    b0 = 2 + 4 * ["GET", "POST", "PUT", "DELETE", "PATCH"].index(method) + (0x80 if auth else 0)
    return bytes([b0]) + uri + (b"\n" + body if body else b"")
write("api_inputs", "since-duration", b"\x0015m")
write("api_inputs", "since-rfc3339", b"\x002026-01-02T03:04:05+01:00")
write("api_inputs", "since-unix", b"\x001700000000")
# Found by this target: unix seconds past SystemTime's range panicked the handler.
write("api_inputs", "since-unix-max", req("GET", b"/api/v1/history?since=18446744073709551615"))
write("api_inputs", "matcher-re", b'\x01alertname=~"Ws.*|Fd"')
write("api_inputs", "matcher-ne", b"\x01severity != info")
write("api_inputs", "history", req("GET", b"/api/v1/history?since=2h"))
write("api_inputs", "history-bad", req("GET", b"/api/v1/history?since=%FF%FE&since=1"))
write("api_inputs", "connections", req("GET", b"/api/v1/processes/4242/connections"))
write("api_inputs", "connections-bad", req("GET", b"/api/v1/processes/-1/connections"))
write("api_inputs", "metrics", req("GET", b"/metrics"))
write("api_inputs", "detailed", req("GET", b"/health/detailed"))
write("api_inputs", "post-json", req("POST", b"/api/v1/silences",
      b'{"matchers":[{"name":"alertname","op":"=~","value":"Ws.*"}],"ends_at":"2026-01-02T03:04:05Z","comment":"x"}'))
write("api_inputs", "delete", req("DELETE", b"/api/v1/alerts/0123456789abcdef"))
# With the token (bit 7): the mutations parse their bodies.
write("api_inputs", "auth-silence", req("POST", b"/api/v1/silences",
      b'{"matchers":["alertname=~\\"Ws.*\\"","severity!=info"],"duration":"1h","created_by":"fuzz","comment":"x"}', auth=True))
write("api_inputs", "auth-fire", req("POST", b"/api/v1/alerts",
      b'{"severity":"warning","message":"m","labels":{"alertname":"Manual"}}', auth=True))
write("api_inputs", "auth-ack", req("POST", b"/api/v1/alerts/0123456789abcdef/ack", b'{"by":"me","comment":"c"}', auth=True))
write("api_inputs", "auth-unsilence", req("DELETE", b"/api/v1/silences/1", auth=True))
write("api_inputs", "auth-remediation", req("POST", b"/api/v1/remediation/pause", b"{}", auth=True))
