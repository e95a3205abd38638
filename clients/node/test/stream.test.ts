/** results() against an in-process gRPC server that plays a scripted StreamResults. */
import assert from "node:assert/strict";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import {
  MemoryCursorStore,
  ResultEvent,
  type StreamItem,
  StreamResultsRequest,
  StreamResultsResponse,
  UnreadableEvent,
  VaultClient,
  VaultingStatus,
} from "../src";

/** A StreamResultsResponse whose oneof holds a member this client does not know (field 4, an
 * empty message), as a newer server would send. */
const NEWER_KIND = Buffer.from([0x22, 0x00]);

const checkpoint = (token: string): StreamResultsResponse =>
  StreamResultsResponse.create({ kind: { oneofKind: "checkpoint", checkpoint: { resumeToken: token } } });
const event = (token: string, id: string): StreamResultsResponse =>
  StreamResultsResponse.create({
    kind: { oneofKind: "event", event: ResultEvent.create({ resumeToken: token, result: { vaultingRequestId: id, status: VaultingStatus.SUCCEEDED } }) },
  });
const unreadable = (token: string, id: string): StreamResultsResponse =>
  StreamResultsResponse.create({
    kind: { oneofKind: "unreadableEvent", unreadableEvent: UnreadableEvent.create({ resumeToken: token, vaultingRequestId: id, reason: "corrupt" }) },
  });

/** The resume token of an item, whatever its kind. */
const tokenOf = (item: StreamItem): string => (item.kind === "event" ? item.event.resumeToken : item.unreadable.resumeToken);

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

  const received: StreamItem[] = [];
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

  assert.deepEqual(received.map(tokenOf), ["t1", "t2"]);
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
  const received: StreamItem[] = [];
  for await (const item of client.results({ cursor, signal: stop.signal })) {
    received.push(item);
    stop.abort();
  }
  assert.equal(received.length, 1);
  assert.equal(await cursor.load(), "t1");
});

test("Regression: results() skipped an UnreadableEvent as an unknown kind, so the consumer never learned to re-read that request; it is handed out in the event's place and saved only once handled", async (t) => {
  const script = (call: grpc.ServerWritableStream<StreamResultsRequest, StreamResultsResponse | Buffer>): void => {
    call.write(checkpoint("t0"));
    call.write(unreadable("t1", "vr-1"));
    call.write(event("t2", "vr-2"));
  };
  const { address, requests, server } = await streamServer([script, script]);
  t.after(() => server.forceShutdown());
  const client = new VaultClient({ address });
  t.after(() => client.close());
  const cursor = new MemoryCursorStore();

  // A consumer that fails while handling the unreadable event: its token must not be saved.
  for await (const item of client.results({ cursor })) {
    assert.deepEqual(item, { kind: "unreadable", unreadable: UnreadableEvent.create({ resumeToken: "t1", vaultingRequestId: "vr-1", reason: "corrupt" }) });
    break;
  }
  assert.equal(await cursor.load(), "t0", "an unreadable event left unhandled is not counted as processed");

  // The next run gets it again, in the same place, then the event after it.
  const received: StreamItem[] = [];
  const cursorWhenReceived: (string | undefined)[] = [];
  for await (const item of client.results({ cursor })) {
    received.push(item);
    cursorWhenReceived.push(await cursor.load());
    if (received.length === 2) {
      break;
    }
  }
  assert.deepEqual(
    received.map((item) => (item.kind === "event" ? `event ${item.event.result?.vaultingRequestId}` : `unreadable ${item.unreadable.vaultingRequestId}`)),
    ["unreadable vr-1", "event vr-2"],
  );
  assert.deepEqual(cursorWhenReceived, ["t0", "t1"], "the unreadable event's token is saved once the loop body is done with it");
  assert.deepEqual(requests.map((request) => request.resumeToken), ["", "t0"]);
});
