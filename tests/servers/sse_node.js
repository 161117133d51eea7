#!/usr/bin/env node
// Unmodified Server-Sent Events server on node's own `http` module, for wsguard's tests and bench.
//
//   node sse_node.js [PORT]
//
// Prints `READY <port>` on stdout once listening on 127.0.0.1. Every GET is answered with
// `Content-Type: text/event-stream`; the query string is the script (shared by sse_aiohttp.py
// and sse_go, see tests/src/sse.rs):
//   b=HEX        the event-stream body, bytes exactly as written (any line ends, comments, ...)
//   cuts=a,b,..  body offsets where a new write begins; each write is flushed on its own, ~2 ms
//   cuts=every   every byte its own write
//                apart (adversarial splits: inside `data:`, between CR and LF, ...)
//   end=server   end the response after the body (chunked terminator, or close when unchunked)
//   end=client   keep the stream open until the client goes away (the default)
//   te=identity  no chunked encoding: the body runs until the connection closes
//   n=N&rate=R   bench: write the body N times, R writes per second (one write per copy)
// Exits 0 on SIGTERM/SIGINT.
'use strict';

const http = require('http');

function script(url) {
  const q = new URL(url, 'http://x').searchParams;
  const body = Buffer.from(q.get('b') || '', 'hex');
  const cuts =
    q.get('cuts') === 'every'
      ? Array.from({ length: body.length }, (_, i) => i)
      : (q.get('cuts') || '')
          .split(',')
          .filter((s) => s !== '')
          .map(Number);
  const bounds = [0, ...cuts.filter((c) => c > 0 && c < body.length), body.length];
  const writes = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    if (bounds[i + 1] > bounds[i]) writes.push(body.subarray(bounds[i], bounds[i + 1]));
  }
  return {
    writes,
    body,
    end: q.get('end') || 'client',
    identity: q.get('te') === 'identity',
    n: Number(q.get('n') || 0),
    rate: Number(q.get('rate') || 0),
  };
}

const server = http.createServer((req, res) => {
  const s = script(req.url);
  if (s.identity) res.useChunkedEncodingByDefault = false;
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  res.flushHeaders();
  req.socket.setNoDelay(true);
  let gone = false;
  res.on('close', () => {
    gone = true;
  });
  const finish = () => {
    if (gone) return;
    if (s.end === 'server') res.end();
    // end=client: hold the stream open until the client goes away ('close' above).
  };
  if (s.n > 0) {
    // Paced bench stream: copy k is due at start + k / rate seconds.
    const start = process.hrtime.bigint();
    let k = 0;
    const tick = () => {
      if (gone) return;
      const due = s.rate > 0 ? Number(((process.hrtime.bigint() - start) * BigInt(s.rate)) / 1000000000n) + 1 : s.n;
      while (k < s.n && k < due) {
        res.write(s.body);
        k++;
      }
      if (k < s.n) setTimeout(tick, 1);
      else finish();
    };
    tick();
    return;
  }
  let i = 0;
  const next = () => {
    if (gone) return;
    if (i < s.writes.length) {
      res.write(s.writes[i++]);
      setTimeout(next, 2);
    } else {
      finish();
    }
  };
  next();
});

server.keepAliveTimeout = 0;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write(`READY ${server.address().port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 500).unref();
  });
}
