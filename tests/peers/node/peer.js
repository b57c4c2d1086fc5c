#!/usr/bin/env node
// The Node @grpc/grpc-js peer: a server of tests/peers/interop.proto and a
// client that runs the interop cases against any such server.
//
//   node peer.js server [--cert C --key K [--client-ca CA]]
//       listens on 127.0.0.1:0, prints "peer listening address=IP:PORT"
//   node peer.js client --target IP:PORT [--ca CA [--cert C --key K]
//                       [--server-name N]] [--cases a,b]
//       one "CASE name PASS|FAIL why" line per case; exit 1 if any failed
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const definition = protoLoader.loadSync(path.join(__dirname, '..', 'interop.proto'), {
  keepCase: true,
  longs: Number,
  defaults: true,
});
const pkg = grpc.loadPackageDefinition(definition).torii.interop.v1;

const SERVICE = '/torii.interop.v1.TestService/';
const LARGE_REQUEST = 271828;
const LARGE_RESPONSE = 314159;
const REQUEST_SIZES = [27182, 8, 1828, 45904];
const RESPONSE_SIZES = [31415, 9, 2653, 58979];
const INITIAL_KEY = 'x-echo-initial';
const INITIAL_VALUE = 'test_initial_metadata_value';
const TRAILING_KEY = 'x-echo-trailing-bin';
const TRAILING_VALUE = Buffer.from([0xab, 0xab, 0xab]);
const SPECIAL_MESSAGE = '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';

function args(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    out[argv[i].replace(/^--/, '')] = argv[i + 1];
  }
  return out;
}

// --- server ------------------------------------------------------------------

function echoMetadata(call) {
  const initial = call.metadata.get(INITIAL_KEY);
  if (initial.length > 0) {
    const md = new grpc.Metadata();
    md.set(INITIAL_KEY, initial[0]);
    call.sendMetadata(md);
  }
  const trailer = new grpc.Metadata();
  const trailing = call.metadata.get(TRAILING_KEY);
  if (trailing.length > 0) {
    trailer.set(TRAILING_KEY, trailing[0]);
  }
  return trailer;
}

function statusError(status, trailer) {
  if (!status || status.code === 0) {
    return null;
  }
  return { code: status.code, details: status.message, metadata: trailer };
}

function zeros(n) {
  return { payload: { body: Buffer.alloc(n) } };
}

// Waits, but no longer than the call lives; resolves false if it ended.
function wait(call, us) {
  if (!us) {
    return Promise.resolve(!call.cancelled);
  }
  return new Promise((resolve) => {
    const onCancel = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      call.removeListener('cancelled', onCancel);
      resolve(!call.cancelled);
    }, us / 1000);
    call.once('cancelled', onCancel);
  });
}

async function sendResponses(call, req) {
  for (const params of req.response_parameters) {
    if (!(await wait(call, params.interval_us))) {
      return false;
    }
    call.write(zeros(params.size));
  }
  return true;
}

const handlers = {
  EmptyCall(call, callback) {
    const trailer = echoMetadata(call);
    callback(null, {}, trailer);
  },
  UnaryCall(call, callback) {
    const trailer = echoMetadata(call);
    const err = statusError(call.request.response_status, trailer);
    if (err) {
      callback(err);
      return;
    }
    callback(null, zeros(call.request.response_size), trailer);
  },
  async StreamingOutputCall(call) {
    const trailer = echoMetadata(call);
    if (!(await sendResponses(call, call.request))) {
      return;
    }
    const err = statusError(call.request.response_status, trailer);
    if (err) {
      call.emit('error', err);
    } else {
      call.end(trailer);
    }
  },
  StreamingInputCall(call, callback) {
    const trailer = echoMetadata(call);
    let total = 0;
    call.on('data', (req) => {
      total += req.payload ? req.payload.body.length : 0;
    });
    call.on('end', () => callback(null, { aggregated_payload_size: total }, trailer));
    call.on('error', () => {});
  },
  FullDuplexCall(call) {
    const trailer = echoMetadata(call);
    // Requests are handled one after another, in order.
    let chain = Promise.resolve(true);
    let failed = false;
    call.on('data', (req) => {
      chain = chain.then(async (going) => {
        if (!going || failed) {
          return false;
        }
        if (!(await sendResponses(call, req))) {
          return false;
        }
        const err = statusError(req.response_status, trailer);
        if (err) {
          failed = true;
          call.emit('error', err);
          return false;
        }
        return true;
      });
    });
    call.on('end', () => {
      chain.then((going) => {
        if (going && !failed) {
          call.end(trailer);
        }
      });
    });
    call.on('error', () => {});
  },
};

function serve(opts) {
  // Default options: grpc-js's own keepalive enforcement.
  const server = new grpc.Server();
  server.addService(pkg.TestService.service, handlers);
  let creds = grpc.ServerCredentials.createInsecure();
  if (opts.cert) {
    const ca = opts['client-ca'] ? fs.readFileSync(opts['client-ca']) : null;
    creds = grpc.ServerCredentials.createSsl(
      ca,
      [{ private_key: fs.readFileSync(opts.key), cert_chain: fs.readFileSync(opts.cert) }],
      ca !== null,
    );
  }
  server.bindAsync('127.0.0.1:0', creds, (err, port) => {
    if (err) {
      console.error('peer:', err.message);
      process.exit(2);
    }
    console.log(`peer listening address=127.0.0.1:${port}`);
  });
}

// --- client ------------------------------------------------------------------

class Failed extends Error {}

function check(cond, what) {
  if (!cond) {
    throw new Failed(what);
  }
}

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

function expectStatus(err, code, message) {
  check(err && err.code !== undefined, `expected ${CODE_NAMES[code]}, got ${err}`);
  check(err.code === code, `expected ${CODE_NAMES[code]}, got ${CODE_NAMES[err.code]}: ${JSON.stringify(err.details)}`);
  if (message !== undefined) {
    check(err.details === message, `expected message ${JSON.stringify(message)}, got ${JSON.stringify(err.details)}`);
  }
}

function deadline(ms) {
  return { deadline: new Date(Date.now() + ms) };
}

function unary(client, method, req, metadata) {
  return new Promise((resolve, reject) => {
    const result = {};
    const call = client[method](req, metadata || new grpc.Metadata(), deadline(10000), (err, reply) => {
      if (err) {
        reject(err);
      } else {
        result.reply = reply;
      }
    });
    call.on('metadata', (md) => {
      result.initial = md;
    });
    call.on('status', (status) => {
      result.trailing = status.metadata;
      if (status.code === grpc.status.OK) {
        resolve(result);
      }
    });
  });
}

async function expectError(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Failed('the call succeeded but an error status was expected');
}

// Reads a response stream to its end: resolves with the responses and the
// trailing metadata, rejects with the error status.
function readAll(call) {
  return new Promise((resolve, reject) => {
    const replies = [];
    let initial = null;
    call.on('metadata', (md) => {
      initial = md;
    });
    call.on('data', (r) => replies.push(r));
    call.on('error', reject);
    call.on('status', (status) => {
      if (status.code === grpc.status.OK) {
        resolve({ replies, initial, trailing: status.metadata });
      }
    });
  });
}

// The next response of a stream, or its error.
function next(call) {
  return new Promise((resolve, reject) => {
    const onData = (r) => {
      call.removeListener('error', onError);
      resolve(r);
    };
    const onError = (e) => {
      call.removeListener('data', onData);
      reject(e);
    };
    call.once('data', onData);
    call.once('error', onError);
  });
}

const size = (r) => (r.payload ? r.payload.body.length : 0);

const cases = {
  async empty_unary(c) {
    await unary(c, 'EmptyCall', {});
  },
  async large_unary(c) {
    const { reply } = await unary(c, 'UnaryCall', {
      response_size: LARGE_RESPONSE,
      payload: { body: Buffer.alloc(LARGE_REQUEST) },
    });
    check(size(reply) === LARGE_RESPONSE, `payload of ${size(reply)} B`);
  },
  async client_streaming(c) {
    const reply = await new Promise((resolve, reject) => {
      const call = c.StreamingInputCall(deadline(10000), (err, r) => (err ? reject(err) : resolve(r)));
      for (const n of REQUEST_SIZES) {
        call.write({ payload: { body: Buffer.alloc(n) } });
      }
      call.end();
    });
    const want = REQUEST_SIZES.reduce((a, b) => a + b);
    check(reply.aggregated_payload_size === want, `aggregated ${reply.aggregated_payload_size}`);
  },
  async server_streaming(c) {
    const call = c.StreamingOutputCall({ response_parameters: RESPONSE_SIZES.map((n) => ({ size: n })) }, deadline(10000));
    const { replies } = await readAll(call);
    const sizes = replies.map(size);
    check(JSON.stringify(sizes) === JSON.stringify(RESPONSE_SIZES), `response sizes ${sizes}`);
  },
  async ping_pong(c) {
    const call = c.FullDuplexCall(deadline(10000));
    const done = readAll(call);
    done.catch(() => {});
    for (let i = 0; i < RESPONSE_SIZES.length; i++) {
      const reply = next(call);
      call.write({ response_parameters: [{ size: RESPONSE_SIZES[i] }], payload: { body: Buffer.alloc(REQUEST_SIZES[i]) } });
      const r = await reply;
      check(size(r) === RESPONSE_SIZES[i], `response of ${size(r)} B, expected ${RESPONSE_SIZES[i]}`);
    }
    call.end();
    const { replies } = await done;
    check(replies.length === RESPONSE_SIZES.length, `${replies.length} responses in all`);
  },
  async empty_stream(c) {
    const call = c.FullDuplexCall(deadline(3000));
    call.end();
    const { replies } = await readAll(call);
    check(replies.length === 0, `${replies.length} responses`);
  },
  async cancel_after_begin(c) {
    const err = await expectError(
      new Promise((resolve, reject) => {
        const call = c.StreamingInputCall(deadline(10000), (e, r) => (e ? reject(e) : resolve(r)));
        call.cancel();
      }),
    );
    expectStatus(err, grpc.status.CANCELLED);
  },
  async cancel_after_first_response(c) {
    const call = c.FullDuplexCall(deadline(10000));
    const done = readAll(call);
    const first = next(call);
    call.write({ response_parameters: [{ size: 31415 }], payload: { body: Buffer.alloc(27182) } });
    const r = await first;
    check(size(r) === 31415, `response of ${size(r)} B`);
    call.cancel();
    expectStatus(await expectError(done), grpc.status.CANCELLED);
  },
  async timeout_on_sleeping_server(c) {
    const call = c.FullDuplexCall(deadline(500));
    const done = readAll(call);
    call.write({ response_parameters: [{ size: 1, interval_us: 20000000 }], payload: { body: Buffer.alloc(27182) } });
    expectStatus(await expectError(done), grpc.status.DEADLINE_EXCEEDED);
  },
  async custom_metadata(c) {
    const md = new grpc.Metadata();
    md.set(INITIAL_KEY, INITIAL_VALUE);
    md.set(TRAILING_KEY, TRAILING_VALUE);
    const u = await unary(c, 'UnaryCall', { response_size: LARGE_RESPONSE, payload: { body: Buffer.alloc(LARGE_REQUEST) } }, md);
    check(size(u.reply) === LARGE_RESPONSE, `payload of ${size(u.reply)} B`);
    checkEchoed('unary', u.initial, u.trailing);

    const call = c.FullDuplexCall(md, deadline(10000));
    const done = readAll(call);
    call.write({ response_parameters: [{ size: LARGE_RESPONSE }] });
    call.end();
    const s = await done;
    check(s.replies.length === 1 && size(s.replies[0]) === LARGE_RESPONSE, `full duplex responses ${s.replies.map(size)}`);
    checkEchoed('full duplex', s.initial, s.trailing);
  },
  async status_code_and_message(c) {
    await statusAndMessage(c, 2, 'test status message');
  },
  async special_status_message(c) {
    await statusAndMessage(c, 2, SPECIAL_MESSAGE);
  },
  async status_codes(c) {
    for (let code = 1; code <= 16; code++) {
      const message = `code ${code} \u263a`;
      const err = await expectError(unary(c, 'UnaryCall', { response_status: { code, message } }));
      try {
        expectStatus(err, code, message);
      } catch (e) {
        throw new Failed(`code ${code}: ${e.message}`);
      }
    }
  },
  async unimplemented_method(c) {
    await unimplemented(c, SERVICE + 'UnimplementedCall');
  },
  async unimplemented_service(c) {
    await unimplemented(c, '/torii.interop.v1.UnimplementedService/UnimplementedCall');
  },
};

function checkEchoed(what, initial, trailing) {
  const i = initial ? initial.get(INITIAL_KEY) : [];
  check(i.length === 1 && i[0] === INITIAL_VALUE, `${what}: initial metadata ${JSON.stringify(initial && initial.getMap())}`);
  const t = trailing ? trailing.get(TRAILING_KEY) : [];
  check(t.length === 1 && Buffer.isBuffer(t[0]) && t[0].equals(TRAILING_VALUE), `${what}: trailing metadata ${JSON.stringify(trailing && trailing.getMap())}`);
}

async function statusAndMessage(c, code, message) {
  const status = { code, message };
  let err = await expectError(unary(c, 'UnaryCall', { response_status: status }));
  try {
    expectStatus(err, code, message);
  } catch (e) {
    throw new Failed(`unary: ${e.message}`);
  }
  const call = c.FullDuplexCall(deadline(10000));
  const done = readAll(call);
  call.write({ response_status: status });
  call.end();
  err = await expectError(done);
  try {
    expectStatus(err, code, message);
  } catch (e) {
    throw new Failed(`full duplex: ${e.message}`);
  }
}

async function unimplemented(c, method) {
  const identity = (x) => x;
  const err = await expectError(
    new Promise((resolve, reject) => {
      c.makeUnaryRequest(method, () => Buffer.alloc(0), identity, {}, new grpc.Metadata(), deadline(10000), (e, r) =>
        e ? reject(e) : resolve(r),
      );
    }),
  );
  expectStatus(err, grpc.status.UNIMPLEMENTED);
}

async function runClient(opts) {
  let creds = grpc.credentials.createInsecure();
  const options = { 'grpc.enable_http_proxy': 0 };
  if (opts.ca) {
    creds = grpc.credentials.createSsl(
      fs.readFileSync(opts.ca),
      opts.key ? fs.readFileSync(opts.key) : null,
      opts.cert ? fs.readFileSync(opts.cert) : null,
    );
    options['grpc.ssl_target_name_override'] = opts['server-name'] || 'localhost';
    options['grpc.default_authority'] = opts['server-name'] || 'localhost';
  }
  const client = new pkg.TestService(opts.target, creds, options);
  const names = opts.cases ? opts.cases.split(',') : Object.keys(cases);
  let failed = 0;
  for (const name of names) {
    const started = Date.now();
    let line = 'PASS';
    try {
      await cases[name](client);
    } catch (err) {
      failed++;
      const why = err instanceof Failed ? err.message : err.code !== undefined ? `${CODE_NAMES[err.code]}: ${JSON.stringify(err.details)}` : String(err);
      line = 'FAIL ' + why.replace(/\n/g, '\\n');
    }
    console.log(`CASE ${name} ${line} (${Date.now() - started} ms)`);
  }
  client.close();
  process.exit(failed ? 1 : 0);
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'server') {
  serve(args(rest));
} else if (mode === 'client') {
  runClient(args(rest));
} else {
  console.error('usage: node peer.js server|client ...');
  process.exit(2);
}
