#!/usr/bin/env node
// One unary torii.echo.v1.Echo/Unary call with @grpc/grpc-js, with call
// metadata from the command line; prints one JSON line: the status code,
// its details, and the headers the echo upstream saw.
//
//   node echo_call.js --target IP:PORT [--metadata name=value ...]
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const definition = protoLoader.loadSync(
  path.join(__dirname, '..', '..', '..', 'proto', 'echo.proto'),
  { keepCase: true, longs: Number, defaults: true },
);
const echo = grpc.loadPackageDefinition(definition).torii.echo.v1;

let target = null;
const metadata = new grpc.Metadata();
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (argv[i] === '--target') {
    target = argv[i + 1];
  } else if (argv[i] === '--metadata') {
    const at = argv[i + 1].indexOf('=');
    metadata.add(argv[i + 1].slice(0, at), argv[i + 1].slice(at + 1));
  } else {
    console.error(`unknown argument ${argv[i]}`);
    process.exit(2);
  }
}

const client = new echo.Echo(target, grpc.credentials.createInsecure());
client.Unary({ message: 'hi' }, metadata, { deadline: Date.now() + 10000 }, (err, reply) => {
  const out = err
    ? { code: err.code, details: err.details, headers: {} }
    : { code: 0, details: '', headers: reply.headers };
  console.log(JSON.stringify(out));
  client.close();
});
