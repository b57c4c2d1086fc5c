#!/usr/bin/env node
// A proxyless gRPC client of an xDS control plane: @grpc/grpc-js with
// @grpc/grpc-js-xds resolves an xds:/// target (Listener with an
// api_listener, RouteConfiguration, Cluster, ClusterLoadAssignment, over
// ADS state of the world) and calls torii.echo.v1.Echo/Unary through it.
// A real xDS client, to check the black-box tests' control plane.
//
//   node xds_client.js --server IP:PORT --target xds:///NAME
//                      [--calls N] [--until BACKEND] [--seconds S] [--interval-ms MS]
//
// Prints one line per call: `CALL OK <reply message>` or
// `CALL FAIL <code> <details>`, then `DONE <ok> <failed>`. It makes at
// most N calls in at most S seconds, MS apart, and stops early once a
// reply starts with BACKEND (--until).
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const args = { calls: '20', seconds: '30', 'interval-ms': '0' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (!argv[i].startsWith('--') || argv[i + 1] === undefined) {
    console.error(`bad argument ${argv[i]}`);
    process.exit(2);
  }
  args[argv[i].slice(2)] = argv[i + 1];
}

// The bootstrap, from the environment as gRPC reads it: one ADS server,
// plaintext.
process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
  xds_servers: [{ server_uri: args.server, channel_creds: [{ type: 'insecure' }], server_features: [] }],
  node: { id: 'grpc-js-xds-peer', cluster: 'blackbox', locality: {} },
});
require('@grpc/grpc-js-xds').register();

const definition = protoLoader.loadSync(
  path.join(__dirname, '..', '..', '..', 'proto', 'echo.proto'),
  { keepCase: true, longs: Number, defaults: true },
);
const echo = grpc.loadPackageDefinition(definition).torii.echo.v1;
const client = new echo.Echo(args.target, grpc.credentials.createInsecure());

const calls = Number(args.calls);
const deadline = Date.now() + Number(args.seconds) * 1000;
let ok = 0;
let failed = 0;

function unary(i) {
  return new Promise((resolve) => {
    const options = { deadline: Math.min(deadline, Date.now() + 10000) };
    client.Unary({ message: `xds-${i}` }, options, (err, reply) => {
      if (err) {
        failed += 1;
        console.log(`CALL FAIL ${err.code} ${err.details}`);
        resolve(null);
      } else {
        ok += 1;
        console.log(`CALL OK ${reply.message}`);
        resolve(reply.message);
      }
    });
  });
}

(async () => {
  for (let i = 0; i < calls && Date.now() < deadline; i += 1) {
    const reply = await unary(i);
    if (args.until && reply !== null && reply.startsWith(`${args.until} `)) {
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, Number(args['interval-ms'])));
  }
  console.log(`DONE ${ok} ${failed}`);
  client.close();
  process.exit(0);
})();
