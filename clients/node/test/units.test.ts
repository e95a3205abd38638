/** The client's parts that need no server: backoff, cursor files, error details, credentials. */
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import * as grpc from "@grpc/grpc-js";

import { Backoff, decodeStatusDetails, FileCursorStore, InvalidArgumentError, ResumeTokenRefusedError, toVaultError, VaultClient } from "../src";
import { isLoopback } from "../src/client";
import { tlsChannelCredentials } from "../src/credentials";
import { Any } from "../src/gen/google/protobuf/any";
import { BadRequest, ErrorInfo, RetryInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";

function statusMetadata(...details: Any[]): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(Status.toBinary(Status.create({ code: 3, message: "m", details }))));
  return metadata;
}

test("backoff delays grow to the maximum, jittered within the upper half of each step, never below a server's floor", () => {
  const low = new Backoff({ initialDelayMs: 100, maxDelayMs: 400 }, () => 0);
  assert.deepEqual([low.next(), low.next(), low.next(), low.next()], [50, 100, 200, 200]);
  const high = new Backoff({ initialDelayMs: 100, maxDelayMs: 400 }, () => 1);
  assert.deepEqual([high.next(), high.next(), high.next(), high.next()], [100, 200, 400, 400]);
  high.reset();
  assert.equal(high.next(), 100);
  assert.equal(high.next(1000), 1000);
  assert.throws(() => new Backoff({ initialDelayMs: 0 }), RangeError);
});

test("the file cursor store reads what it saved, replaces it whole and leaves no temporary file", async (t) => {
  const folder = await mkdtemp(join(tmpdir(), "vault-cursor-"));
  t.after(() => rm(folder, { recursive: true, force: true }));
  const store = new FileCursorStore(join(folder, "cursor"));
  assert.equal(await store.load(), undefined);
  await store.save("first-token");
  await store.save("second-token");
  assert.equal(await store.load(), "second-token");
  assert.equal(await readFile(join(folder, "cursor"), "utf8"), "second-token\n");
  assert.deepEqual(await readdir(folder), ["cursor"]);
});

test("status details decode into field violations, Antom's reason and message, and the retry delay", () => {
  const metadata = statusMetadata(
    Any.pack(BadRequest.create({ fieldViolations: [{ field: "labels", description: "too many" }] }), BadRequest),
    Any.pack(ErrorInfo.create({ reason: "CARD_EXPIRED", domain: "antom", metadata: { result_message: "expired" } }), ErrorInfo),
    Any.pack(RetryInfo.create({ retryDelay: { seconds: 1n, nanos: 500_000_000 } }), RetryInfo),
    Any.create({ typeUrl: "type.googleapis.com/google.rpc.SomethingNew", value: new Uint8Array([1, 2]) }),
  );
  const error = toVaultError({ code: grpc.status.INVALID_ARGUMENT, details: "invalid", metadata });
  assert.ok(error instanceof InvalidArgumentError);
  assert.deepEqual(error.fieldViolations, [{ field: "labels", description: "too many" }]);
  assert.equal(error.antomReason, "CARD_EXPIRED");
  assert.equal(error.antomResultMessage, "expired");
  assert.equal(error.retryDelayMs, 1500);
  assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
});

test("a refused resume_token is ResumeTokenRefusedError only on a resuming stream", () => {
  const metadata = statusMetadata(Any.pack(BadRequest.create({ fieldViolations: [{ field: "resume_token", description: "too old" }] }), BadRequest));
  const status = { code: grpc.status.INVALID_ARGUMENT, details: "invalid resume_token", metadata };
  assert.ok(toVaultError(status, true) instanceof ResumeTokenRefusedError);
  assert.ok(!(toVaultError(status, false) instanceof ResumeTokenRefusedError));
});

test("missing or undecodable details give an error without details, never a crash", () => {
  assert.deepEqual(decodeStatusDetails(new grpc.Metadata()), { fieldViolations: [], errorInfo: undefined, retryDelayMs: undefined });
  const garbage = new grpc.Metadata();
  garbage.set("grpc-status-details-bin", Buffer.from([0xff, 0xff, 0xff]));
  assert.equal(toVaultError({ code: grpc.status.INTERNAL, details: "x", metadata: garbage }).fieldViolations.length, 0);
});

test("a bearer token is never sent in plaintext beyond loopback", () => {
  for (const address of ["127.0.0.1:50051", "localhost:1", "[::1]:50051", "dns:///localhost:50051", "ipv4:127.0.0.2:1"]) {
    assert.ok(isLoopback(address), address);
  }
  for (const address of ["vault.internal:50051", "10.0.0.1:50051", "dns:///vault:443", "127.example.com:1"]) {
    assert.ok(!isLoopback(address), address);
  }
  assert.throws(() => new VaultClient({ address: "vault.internal:50051", token: "t" }), /plaintext/);
  new VaultClient({ address: "127.0.0.1:1", token: "t" }).close();
});

test("mTLS needs both the client certificate and its key", () => {
  assert.throws(() => tlsChannelCredentials({ cert: Buffer.from("x") }), /both/);
});
