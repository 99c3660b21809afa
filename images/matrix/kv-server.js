// A Node.js HTTP server whose state lives in memory, on 127.0.0.1:$PORT.
//   PUT /kv/<key> with a body stores it; GET / answers the state as JSON:
//   {"pid": ..., "requests": <requests served, this one included>,
//    "ticks": <100 ms timer ticks so far>, "values": {<key>: <body>, ...}}
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 8080);
const values = new Map();
let requests = 0;
let ticks = 0;
setInterval(() => { ticks += 1; }, 100);

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
}

const server = http.createServer((req, res) => {
  requests += 1;
  if (req.method === 'PUT' && req.url.startsWith('/kv/')) {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      values.set(decodeURIComponent(req.url.slice('/kv/'.length)), Buffer.concat(chunks).toString());
      answer(res, 201, { stored: values.size });
    });
  } else if (req.method === 'GET' && req.url === '/') {
    answer(res, 200, { pid: process.pid, requests, ticks, values: Object.fromEntries(values) });
  } else {
    answer(res, 404, { error: 'not found' });
  }
});
server.listen(port, '127.0.0.1', () => console.log(`node listening on 127.0.0.1:${port}`));
