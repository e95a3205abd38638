/** results() against an in-process gRPC server that plays a scripted StreamResults. */
import assert from "node:assert/strict";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { MemoryCursorStore, ResultEvent, StreamResultsRequest, StreamResultsResponse, VaultClient, VaultingStatus } from "../src";

/** A StreamResultsResponse whose oneof holds a member this client does not know (field 3), as
 * a newer server would send. */
const NEWER_KIND = Buffer.from([0x1a, 0x02, 0x0a, 0x00]);

const checkpoint = (token: string): StreamResultsResponse =>
  StreamResultsResponse.create({ kind: { oneofKind: "checkpoint", checkpoint: { resumeToken: token } } });
const event = (token: string, id: string): StreamResultsResponse =>
  StreamResultsResponse.create({
    kind: { oneofKind: "event", event: ResultEvent.create({ resumeToken: token, result: { vaultingRequestId: id, status: VaultingStatus.SUCCEEDED } }) },
  });

type Script = (call: grpc.ServerWritableStream<StreamResultsRequest, StreamResultsResponse | Buffer>) => void;

async function streamServer(scripts: Script[]): Promise<{ address: string; requests: StreamResultsRequest[]; server: grpc.Server }> {
  const requests: StreamResultsRequest[] = [];
  const server = new grpc.Server();
  server.addService(
    {
      streamResults: {
        path: "/vault.v1.VaultService/StreamResults",
        requestStream: false,
        responseStream: true,
        requestSerialize: (value: StreamResultsRequest) => Buffer.from(StreamResultsRequest.toBinary(value)),
        requestDeserialize: (bytes: Buffer) => StreamResultsRequest.fromBinary(bytes),
        responseSerialize: (value: StreamResultsResponse | Buffer) =>
          Buffer.isBuffer(value) ? value : Buffer.from(StreamResultsResponse.toBinary(value)),
        responseDeserialize: (bytes: Buffer) => StreamResultsResponse.fromBinary(bytes),
      },
    },
    {
      streamResults: (call: grpc.ServerWritableStream<StreamResultsRequest, StreamResultsResponse | Buffer>) => {
        requests.push(call.request);
        const script = scripts.shift();
        if (script === undefined) {
          call.destroy(Object.assign(new Error("no more scripts"), { code: grpc.status.INTERNAL }));
        } else {
          script(call);
        }
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { address: `127.0.0.1:${port}`, requests, server };
}

test("results() resumes after UNAVAILABLE from the last event's token and skips message kinds it does not know", async (t) => {
  const { address, requests, server } = await streamServer([
    (call) => {
      call.write(checkpoint("t0"));
      call.write(NEWER_KIND);
      call.write(event("t1", "vr-1"));
      call.emit("error", { code: grpc.status.UNAVAILABLE, details: "draining" });
    },
    (call) => {
      call.write(checkpoint("t1"));
      call.write(event("t2", "vr-2"));
    },
  ]);
  t.after(() => server.forceShutdown());
  const client = new VaultClient({ address });
  t.after(() => client.close());
  const cursor = new MemoryCursorStore();
  const reconnects: string[] = [];

  const received: ResultEvent[] = [];
  for await (const item of client.results({
    cursor,
    vaultingRequestIds: ["vr-1", "vr-2"],
    reconnectBackoff: { initialDelayMs: 10, maxDelayMs: 20 },
    onReconnect: (error) => reconnects.push(error.details),
  })) {
    received.push(item);
    if (received.length === 2) {
      break;
    }
  }

  assert.deepEqual(received.map((item) => item.resumeToken), ["t1", "t2"]);
  assert.deepEqual(requests.map((request) => request.resumeToken), ["", "t1"]);
  assert.deepEqual(requests[1]?.vaultingRequestIds, ["vr-1", "vr-2"]);
  assert.deepEqual(reconnects, ["draining"]);
  assert.equal(await cursor.load(), "t1", "left with break: the last event is not counted as processed");
});

test("results() ends cleanly on its signal, counting the last event as processed", async (t) => {
  const { address, server } = await streamServer([
    (call) => {
      call.write(checkpoint("t0"));
      call.write(event("t1", "vr-1"));
    },
  ]);
  t.after(() => server.forceShutdown());
  const client = new VaultClient({ address });
  t.after(() => client.close());
  const cursor = new MemoryCursorStore();
  const stop = new AbortController();
  const received: ResultEvent[] = [];
  for await (const item of client.results({ cursor, signal: stop.signal })) {
    received.push(item);
    stop.abort();
  }
  assert.equal(received.length, 1);
  assert.equal(await cursor.load(), "t1");
});
