/** CreateSession's retries, against an in-process gRPC server that answers as scripted. */
import assert from "node:assert/strict";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { CreateSessionRequest, CreateSessionResponse, FailedPreconditionError, UnavailableError, VaultClient, VaultError } from "../src";
import { Any } from "../src/gen/google/protobuf/any";
import { ErrorInfo, RetryInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";

/** An error, a response, or no answer at all (the call stays open until the client ends it). */
type Answer = { error: Partial<grpc.StatusObject> } | { response: CreateSessionResponse } | { hang: true };

const RETRY_DELAY_MS = 300;

function unavailable(): Answer {
  const status = Status.create({
    code: grpc.status.UNAVAILABLE,
    message: "Antom did not give a definitive answer; retry later",
    details: [Any.pack(RetryInfo.create({ retryDelay: { seconds: 0n, nanos: RETRY_DELAY_MS * 1e6 } }), RetryInfo)],
  });
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(Status.toBinary(status)));
  return { error: { code: grpc.status.UNAVAILABLE, details: status.message, metadata } };
}

/** Serves CreateSession with `answers` in turn; returns the address and what it received. */
async function scriptedServer(answers: Answer[]): Promise<{ address: string; received: { request: CreateSessionRequest; at: number }[]; server: grpc.Server }> {
  const received: { request: CreateSessionRequest; at: number }[] = [];
  const server = new grpc.Server();
  server.addService(
    {
      createSession: {
        path: "/vault.v1.VaultService/CreateSession",
        requestStream: false,
        responseStream: false,
        requestSerialize: (value: CreateSessionRequest) => Buffer.from(CreateSessionRequest.toBinary(value)),
        requestDeserialize: (bytes: Buffer) => CreateSessionRequest.fromBinary(bytes),
        responseSerialize: (value: CreateSessionResponse) => Buffer.from(CreateSessionResponse.toBinary(value)),
        responseDeserialize: (bytes: Buffer) => CreateSessionResponse.fromBinary(bytes),
      },
    },
    {
      createSession: (call: grpc.ServerUnaryCall<CreateSessionRequest, CreateSessionResponse>, callback: grpc.sendUnaryData<CreateSessionResponse>) => {
        received.push({ request: call.request, at: Date.now() });
        const answer = answers.shift() ?? { error: { code: grpc.status.INTERNAL, details: "no more answers" } };
        if ("hang" in answer) {
          return;
        }
        if ("error" in answer) {
          callback(answer.error, null);
        } else {
          callback(null, answer.response);
        }
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { address: `127.0.0.1:${port}`, received, server };
}

test("CreateSession on UNAVAILABLE is sent again with the same request, no sooner than the server's RetryInfo delay", async (t) => {
  const created = CreateSessionResponse.create({ vaultingRequestId: "vr-1", sessionData: "data", created: true });
  const { address, received, server } = await scriptedServer([unavailable(), unavailable(), { response: created }]);
  t.after(() => server.forceShutdown());
  const client = new VaultClient({ address, retryBackoff: { initialDelayMs: 10, maxDelayMs: 20 } });
  t.after(() => client.close());

  const session = await client.createSession({ vaultingRequestId: "vr-1", labels: { order: "A-1" } });

  assert.deepEqual(session, created);
  assert.equal(received.length, 3);
  for (const { request } of received) {
    assert.deepEqual(request, CreateSessionRequest.create({ vaultingRequestId: "vr-1", labels: { order: "A-1" } }));
  }
  for (let i = 1; i < received.length; i += 1) {
    assert.ok(received[i]!.at - received[i - 1]!.at >= RETRY_DELAY_MS - 5, "retried before the RetryInfo delay");
  }
});

test("CreateSession gives up after its attempts with the last UnavailableError, and never retries a definitive failure", async (t) => {
  const refusal = Status.create({
    code: grpc.status.FAILED_PRECONDITION,
    message: "Antom refused the call with REPEAT_REQ_INCONSISTENT",
    details: [Any.pack(ErrorInfo.create({ domain: "antom", reason: "REPEAT_REQ_INCONSISTENT", metadata: { result_status: "F" } }), ErrorInfo)],
  });
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(Status.toBinary(refusal)));
  const { address, received, server } = await scriptedServer([
    unavailable(),
    unavailable(),
    { error: { code: grpc.status.FAILED_PRECONDITION, details: refusal.message, metadata } },
  ]);
  t.after(() => server.forceShutdown());
  const client = new VaultClient({ address, createSessionAttempts: 2, retryBackoff: { initialDelayMs: 10, maxDelayMs: 20 } });
  t.after(() => client.close());

  const exhausted = await client.createSession({ vaultingRequestId: "vr-2" }).catch((e: unknown) => e);
  assert.ok(exhausted instanceof UnavailableError, String(exhausted));
  assert.equal(exhausted.retryDelayMs, RETRY_DELAY_MS);
  assert.equal(received.length, 2);

  const refused = await client.createSession({ vaultingRequestId: "vr-2" }).catch((e: unknown) => e);
  assert.ok(refused instanceof FailedPreconditionError, String(refused));
  assert.equal(refused.antomReason, "REPEAT_REQ_INCONSISTENT");
  assert.equal(received.length, 3);
});

test("CreateSession retries a CANCELLED the server sent, but not one the caller's abort caused", async (t) => {
  const created = CreateSessionResponse.create({ vaultingRequestId: "vr-3", sessionData: "data", created: true });
  const cancelled: Answer = { error: { code: grpc.status.CANCELLED, details: "the server is shutting down" } };
  const { address, received, server } = await scriptedServer([cancelled, { response: created }, { hang: true }]);
  t.after(() => server.forceShutdown());
  const client = new VaultClient({ address, retryBackoff: { initialDelayMs: 10, maxDelayMs: 20 } });
  t.after(() => client.close());

  assert.deepEqual(await client.createSession({ vaultingRequestId: "vr-3" }), created);
  assert.equal(received.length, 2);

  // Aborted while the server holds the call: a retry would find the signal aborted and throw
  // AbortError, so the CANCELLED VaultError proves the client gave up at once.
  const abort = new AbortController();
  const pending = client.createSession({ vaultingRequestId: "vr-4" }, { signal: abort.signal }).catch((e: unknown) => e);
  while (received.length < 3) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  abort.abort();
  const outcome = await pending;
  assert.ok(outcome instanceof VaultError && outcome.code === grpc.status.CANCELLED, String(outcome));
  assert.equal(received.length, 3);
});
