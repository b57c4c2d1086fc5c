#!/usr/bin/env node
// The official `grpc-web` npm client (Google's), run in Node over an
// XMLHttpRequest for Node (xhr2): the gRPC-Web interop cases against a
// gRPC server of tests/peers/interop.proto behind torii.
//
//   node grpc_web_client.js --target http://IP:PORT|https://localhost:PORT
//                           --format text|binary [--cases a,b]
//       one "CASE name PASS|FAIL why" line per case; exit 1 if any failed.
//       For https, trust the CA with NODE_EXTRA_CA_CERTS.
//
// Messages are encoded with protobufjs from interop.proto (no generated
// stubs): grpc-web's MethodDescriptor takes any serialize/deserialize pair.
'use strict';

const path = require('path');
const protobuf = require('protobufjs');
global.XMLHttpRequest = require('xhr2');
const grpcWeb = require('grpc-web');

const root = protobuf.loadSync(path.join(__dirname, '..', 'interop.proto'));
const T = (name) => root.lookupType(`torii.interop.v1.${name}`);

const SERVICE = '/torii.interop.v1.TestService/';
const LARGE_REQUEST = 271828;
const LARGE_RESPONSE = 314159;
const RESPONSE_SIZES = [31415, 9, 2653, 58979];
const INITIAL_KEY = 'x-echo-initial';
const INITIAL_VALUE = 'test_initial_metadata_value';
const TRAILING_KEY = 'x-echo-trailing-bin';
const TRAILING_VALUE = Buffer.from([0xab, 0xab, 0xab]);
const SPECIAL_MESSAGE = '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';

class Failed extends Error {}

function check(ok, why) {
  if (!ok) throw new Failed(why);
}

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

// A MethodDescriptor for `method` with protobufjs types.
function descriptor(method, kind, req, resp) {
  const Req = T(req);
  const Resp = T(resp);
  return new grpcWeb.MethodDescriptor(
    method,
    kind,
    Object,
    Object,
    (m) => Req.encode(Req.fromObject(m)).finish(),
    (bytes) => Resp.toObject(Resp.decode(bytes), { defaults: true }),
  );
}

const deadline = (ms) => ({ deadline: String(Date.now() + ms) });

// A unary call: resolves with {reply, initial, trailing}, rejects with the RpcError.
function unary(c, target, method, request, req, resp, metadata = {}) {
  return new Promise((resolve, reject) => {
    let initial = null;
    let trailing = null;
    const d = descriptor(SERVICE + method, grpcWeb.MethodType.UNARY, req, resp);
    const call = c.rpcCall(target + SERVICE + method, request, { ...metadata, ...deadline(10000) }, d, (err, reply) => {
      if (err) reject(err);
      else setImmediate(() => resolve({ reply, initial, trailing }));
    });
    call.on('metadata', (md) => {
      initial = md;
    });
    call.on('status', (st) => {
      trailing = st.metadata;
    });
  });
}

async function expectError(p) {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Failed('the call succeeded but an error status was expected');
}

function expectStatus(err, code, message) {
  check(err.code === code, `status ${err.code} (${JSON.stringify(err.message)}), expected ${code}`);
  if (message !== undefined) {
    check(err.message === message, `message ${JSON.stringify(err.message)}, expected ${JSON.stringify(message)}`);
  }
}

const size = (r) => (r && r.payload && r.payload.body ? r.payload.body.length : 0);

const cases = {
  async empty_unary(c, t) {
    await unary(c, t, 'EmptyCall', {}, 'Empty', 'Empty');
  },
  async large_unary(c, t) {
    const { reply } = await unary(
      c,
      t,
      'UnaryCall',
      { responseSize: LARGE_RESPONSE, payload: { body: Buffer.alloc(LARGE_REQUEST) } },
      'SimpleRequest',
      'SimpleResponse',
    );
    check(size(reply) === LARGE_RESPONSE, `payload of ${size(reply)} B`);
  },
  async server_streaming(c, t) {
    const d = descriptor(SERVICE + 'StreamingOutputCall', grpcWeb.MethodType.SERVER_STREAMING, 'StreamingOutputCallRequest', 'StreamingOutputCallResponse');
    const request = { responseParameters: RESPONSE_SIZES.map((n) => ({ size: n })) };
    const sizes = await new Promise((resolve, reject) => {
      const got = [];
      const call = c.serverStreaming(t + SERVICE + 'StreamingOutputCall', request, deadline(10000), d);
      call.on('data', (r) => got.push(size(r)));
      call.on('error', reject);
      call.on('end', () => resolve(got));
    });
    check(JSON.stringify(sizes) === JSON.stringify(RESPONSE_SIZES), `response sizes ${sizes}`);
  },
  async custom_metadata(c, t) {
    const md = { [INITIAL_KEY]: INITIAL_VALUE, [TRAILING_KEY]: TRAILING_VALUE.toString('base64') };
    const u = await unary(
      c,
      t,
      'UnaryCall',
      { responseSize: LARGE_RESPONSE, payload: { body: Buffer.alloc(LARGE_REQUEST) } },
      'SimpleRequest',
      'SimpleResponse',
      md,
    );
    check(size(u.reply) === LARGE_RESPONSE, `payload of ${size(u.reply)} B`);
    check(u.initial && u.initial[INITIAL_KEY] === INITIAL_VALUE, `initial metadata ${JSON.stringify(u.initial)}`);
    const tv = u.trailing && u.trailing[TRAILING_KEY];
    check(tv && Buffer.from(tv, 'base64').equals(TRAILING_VALUE), `trailing metadata ${JSON.stringify(u.trailing)}`);
  },
  async status_code_and_message(c, t) {
    const err = await expectError(unary(c, t, 'UnaryCall', { responseStatus: { code: 2, message: 'test status message' } }, 'SimpleRequest', 'SimpleResponse'));
    expectStatus(err, 2, 'test status message');
  },
  async special_status_message(c, t) {
    const err = await expectError(unary(c, t, 'UnaryCall', { responseStatus: { code: 2, message: SPECIAL_MESSAGE } }, 'SimpleRequest', 'SimpleResponse'));
    expectStatus(err, 2, SPECIAL_MESSAGE);
  },
  async unimplemented_method(c, t) {
    expectStatus(await expectError(unary(c, t, 'UnimplementedCall', {}, 'Empty', 'Empty')), 12);
  },
  async unimplemented_service(c, t) {
    const method = '/torii.interop.v1.UnimplementedService/UnimplementedCall';
    const d = descriptor(method, grpcWeb.MethodType.UNARY, 'Empty', 'Empty');
    const err = await expectError(
      new Promise((resolve, reject) => {
        c.rpcCall(t + method, {}, deadline(10000), d, (e, r) => (e ? reject(e) : resolve(r)));
      }),
    );
    expectStatus(err, 12);
  },
};

async function main() {
  const opts = args(process.argv.slice(2));
  const client = new grpcWeb.GrpcWebClientBase({ format: opts.format || 'text' });
  const names = opts.cases ? opts.cases.split(',') : Object.keys(cases);
  let failed = false;
  for (const name of names) {
    try {
      await cases[name](client, opts.target);
      console.log(`CASE ${name} PASS`);
    } catch (e) {
      failed = true;
      const why = e instanceof Failed ? e.message : `${e.code !== undefined ? `status ${e.code}: ` : ''}${e.message || e}`;
      console.log(`CASE ${name} FAIL ${why.replace(/\n/g, '\\n')}`);
    }
  }
  process.exit(failed ? 1 : 0);
}

main();
