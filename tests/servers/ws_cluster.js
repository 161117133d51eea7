#!/usr/bin/env node
// Unmodified node `ws` echo server under the `cluster` module with round-robin scheduling
// (SCHED_RR, as PM2's cluster mode runs apps): the primary accepts every connection and hands
// the socket to one of 2 workers over a Unix socket (SCM_RIGHTS). The workers never call
// accept(2).
//
//   node ws_cluster.js
//
// Prints `READY <port> <worker pid> <worker pid>` once both workers listen. Each 101 response
// carries `X-Worker: <pid>` (ws's `headers` event), so a client knows which worker served it.
'use strict';

const cluster = require('cluster');
const net = require('net');

cluster.schedulingPolicy = cluster.SCHED_RR;
const WORKERS = 2;

if (cluster.isPrimary) {
  // A free port picked once, so every worker listens on the same one.
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1', () => {
    const port = probe.address().port;
    probe.close(() => {
      const pids = [];
      for (let i = 0; i < WORKERS; i++) {
        const w = cluster.fork({ WS_CLUSTER_PORT: String(port) });
        w.on('listening', () => {
          pids.push(w.process.pid);
          if (pids.length === WORKERS) process.stdout.write(`READY ${port} ${pids.join(' ')}\n`);
        });
      }
    });
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].kill('SIGTERM');
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { WebSocketServer, WebSocket } = require('ws');
  const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.env.WS_CLUSTER_PORT), perMessageDeflate: false });
  wss.on('headers', (headers) => headers.push(`X-Worker: ${process.pid}`));
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: isBinary });
    });
    ws.on('error', () => {});
  });
}
