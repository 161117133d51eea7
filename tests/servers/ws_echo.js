#!/usr/bin/env node
// Unmodified node `ws` echo server for wsguard's tests and demo.
//
//   node ws_echo.js [PORT] [--host H] [--ping-ms N] [--perMessageDeflate] [--tls CERT KEY]
//                   [-- IGNORED...]
//
// PORT 0 (the default) picks an ephemeral port. Environment fallbacks: WS_ECHO_HOST,
// WS_ECHO_PORT, WS_ECHO_PING_MS, WS_ECHO_DEFLATE=1.
// Prints `READY <port>` on stdout once listening. Every message is echoed back with the same
// type (text stays text, binary stays binary). No pings are sent unless --ping-ms is given;
// then the server pings every open client every N ms. Compression (permessage-deflate) is off
// unless --perMessageDeflate is given. Exits 0 on SIGTERM/SIGINT after closing the clients
// with 1001 (going away). --tls serves wss:// from an `https` server with the given PEM
// certificate and key (the OpenSSL inside the node binary).
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

function parseArgs(argv) {
  const opts = {
    host: process.env.WS_ECHO_HOST || '127.0.0.1',
    port: Number(process.env.WS_ECHO_PORT || 0),
    pingMs: Number(process.env.WS_ECHO_PING_MS || 0),
    deflate: process.env.WS_ECHO_DEFLATE === '1',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === '--') break; // the rest is only for show (tests of command-line redaction)
    else if (a === '--host') opts.host = value();
    else if (a === '--port') opts.port = Number(value());
    else if (a === '--ping-ms') opts.pingMs = Number(value());
    else if (a === '--perMessageDeflate' || a === '--per-message-deflate') opts.deflate = true;
    else if (a === '--tls') opts.tls = [value(), value()];
    else if (a === '-h' || a === '--help') usage();
    else if (/^\d+$/.test(a)) opts.port = Number(a);
    else usage(`unknown argument ${a}`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad port');
  if (!Number.isFinite(opts.pingMs) || opts.pingMs < 0) usage('bad --ping-ms');
  return opts;
}

function usage(err) {
  if (err) console.error(`ws_echo.js: ${err}`);
  console.error('usage: node ws_echo.js [PORT] [--host H] [--ping-ms N] [--perMessageDeflate]');
  process.exit(err ? 2 : 0);
}

const opts = parseArgs(process.argv.slice(2));
let wss;
if (opts.tls) {
  const fs = require('fs');
  const server = require('https').createServer({ cert: fs.readFileSync(opts.tls[0]), key: fs.readFileSync(opts.tls[1]) });
  // ws forwards the server's 'listening' and 'error' events, and address().
  wss = new WebSocketServer({ server, perMessageDeflate: opts.deflate });
  server.listen(opts.port, opts.host);
} else {
  wss = new WebSocketServer({
    host: opts.host,
    port: opts.port,
    perMessageDeflate: opts.deflate,
  });
}

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: isBinary });
  });
  ws.on('error', (err) => console.error(`ws_echo.js: connection error: ${err.message}`));
});

wss.on('listening', () => {
  // process.stdout is synchronous for pipes and files on Linux, so this line is out at once.
  process.stdout.write(`READY ${wss.address().port}\n`);
});

wss.on('error', (err) => {
  console.error(`ws_echo.js: ${err.message}`);
  process.exit(1);
});

let pinger = null;
if (opts.pingMs > 0) {
  pinger = setInterval(() => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.ping();
    }
  }, opts.pingMs);
}

function shutdown() {
  if (pinger) clearInterval(pinger);
  for (const client of wss.clients) client.close(1001, 'server shutting down');
  wss.close(() => process.exit(0));
  // Do not hang on clients that never answer the close.
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
