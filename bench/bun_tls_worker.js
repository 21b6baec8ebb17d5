// Benchmark worker for bench/probe_cost.py --runtime bun: ping-pong of
// `size` bytes over one local TLS connection (node:tls in Bun: BoringSSL's
// SSL_write / SSL_read), N rounds after "go" on stdin.  Each round is two
// SSL_write and two SSL_read calls; prints microseconds per SSL call.
const tls = require("node:tls");
const fs = require("node:fs");
const [cert, key, nArg, sizeArg] = process.argv.slice(2);
const n = Number(nArg), size = Number(sizeArg);
const msg = Buffer.alloc(size, 120);
const server = tls.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (s) => {
  let got = 0;
  s.on("data", (d) => { got += d.length; while (got >= size) { got -= size; s.write(msg); } });
});
server.listen(0, "127.0.0.1", () => {
  const c = tls.connect({ port: server.address().port, host: "127.0.0.1", rejectUnauthorized: false }, () => {
    console.log("ready");
    process.stdin.once("data", () => {
      let rounds = 0, got = 0;
      const t0 = process.hrtime.bigint();
      c.on("data", (d) => {
        got += d.length;
        while (got >= size) {
          got -= size;
          if (++rounds === n) {
            const us = Number(process.hrtime.bigint() - t0) / 1000;
            console.log(us / (4 * n));
            process.exit(0);
          }
          c.write(msg);
        }
      });
      c.write(msg);
    });
  });
});
