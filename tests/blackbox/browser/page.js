// A web page that calls a gRPC server through torii with a real gRPC-Web
// client (connect-web's gRPC-Web transport, over fetch) from another
// origin: unary, an error status, server streaming, an unknown method.
// It POSTs what it saw to its own origin's /result. Bundled by the test
// with esbuild. The service comes from interop.proto's descriptor, which
// the test serves as interop.desc.b64 (no generated code).
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";

async function calls(result) {
  const target = new URLSearchParams(location.search).get("target");
  const b64 = (await (await fetch("interop.desc.b64")).text()).trim();
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const registry = createFileRegistry(fromBinary(FileDescriptorProtoSchema, bytes), () => undefined);
  const transport = createGrpcWebTransport({ baseUrl: target });
  const client = createClient(registry.getService("torii.interop.v1.TestService"), transport);

  const reply = await client.unaryCall({ responseSize: 31415 });
  result.unary = reply.payload.body.length;

  try {
    await client.unaryCall({ responseStatus: { code: 3, message: "browser \u263a" } });
    result.status = "no error";
  } catch (e) {
    const err = ConnectError.from(e);
    result.status = { code: Code[err.code], message: err.rawMessage };
  }

  result.stream = [];
  for await (const m of client.streamingOutputCall({ responseParameters: [{ size: 9 }, { size: 2653 }, { size: 58979 }] })) {
    result.stream.push(m.payload.body.length);
  }

  // No messages: servers may answer OK Trailers-Only, and connect-web
  // refuses any body after a head that says grpc-status: 0.
  result.empty = [];
  for await (const m of client.streamingOutputCall({ responseParameters: [] })) {
    result.empty.push(m.payload.body.length);
  }

  try {
    await client.unimplementedCall({});
    result.unimplemented = "no error";
  } catch (e) {
    result.unimplemented = Code[ConnectError.from(e).code];
  }
}

async function main() {
  const result = {};
  try {
    await calls(result);
  } catch (e) {
    result.error = String(e && e.stack ? e.stack : e);
  }
  document.getElementById("state").textContent = JSON.stringify(result);
  await fetch("/result", { method: "POST", body: JSON.stringify(result) });
}

main();
