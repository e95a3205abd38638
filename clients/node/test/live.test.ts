/**
 * The client against a real vault-service (`serve` + the Antom emulator as processes, SQLite),
 * using the public API only.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  FileCursorStore,
  InvalidArgumentError,
  MemoryCursorStore,
  NotFoundError,
  type ResultEvent,
  ResumeTokenRefusedError,
  type StreamItem,
  UnauthenticatedError,
  UnavailableError,
  VaultClient,
  VaultingStatus,
} from "../src";
import { LiveService } from "./live-service";

const SESSIONS = 30;
const WAIT_STEP_MS = 20;
const FAST_RECONNECTS = { initialDelayMs: 50, maxDelayMs: 500 };

/** The event of an item: a healthy service's stream has no unreadable events. */
function eventOf(item: StreamItem): ResultEvent {
  if (item.kind !== "event") {
    assert.fail(`an unreadable event of ${item.unreadable.vaultingRequestId}: ${item.unreadable.reason}`);
  }
  return item.event;
}

async function waitUntil(condition: () => boolean | Promise<boolean>, what: string, withinMs = 60_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, WAIT_STEP_MS));
  }
}

describe("VaultClient against a live vault-service", () => {
  let service: LiveService;
  let folder: string;

  before(async () => {
    service = await LiveService.start();
    folder = await mkdtemp(join(tmpdir(), "vault-node-cursor-"));
  });

  after(async () => {
    await service?.stop();
    await rm(folder, { recursive: true, force: true });
  });

  const connect = (overrides: Partial<ConstructorParameters<typeof VaultClient>[0]> = {}): VaultClient =>
    new VaultClient({ address: service.address, token: service.token, ...overrides });

  test("results() hands out every event exactly once, in order, across a SIGKILL, a SIGTERM and a consumer restart", async (t) => {
    const client = connect();
    t.after(() => client.close());
    const ids = Array.from({ length: SESSIONS }, (_, i) => `node-once-${i}`);
    const sessions = await Promise.all(ids.map((vaultingRequestId) => client.createSession({ vaultingRequestId })));
    const cursorFile = join(folder, "exactly-once.cursor");
    const received: ResultEvent[] = [];
    const reconnects: string[] = [];

    // A consumer process: follows from the cursor file until it has `stopAt` events, then stops
    // cleanly with its signal (as a process asked to exit would), its own client and channel.
    const consume = async (stopAt: number): Promise<void> => {
      const consumer = connect();
      const stop = new AbortController();
      try {
        for await (const item of consumer.results({
          cursor: cursorFile,
          signal: stop.signal,
          reconnectBackoff: FAST_RECONNECTS,
          onReconnect: (error) => reconnects.push(error.message),
        })) {
          received.push(eventOf(item));
          if (received.length >= stopAt) {
            stop.abort();
          }
        }
      } finally {
        consumer.close();
      }
    };

    const firstHalf = consume(SESSIONS / 2);
    await waitUntil(async () => (await new FileCursorStore(cursorFile).load()) !== undefined, "the first checkpoint");
    const startToken = await readFile(cursorFile, "utf8");

    const submit = (from: number, to: number): Promise<void[]> =>
      Promise.all(sessions.slice(from, to).map((session) => service.buyerSubmits(session.sessionData)));

    await submit(0, 10);
    await waitUntil(() => received.length >= 5, "5 events");
    await service.restart("SIGKILL");
    await submit(10, 20);
    await firstHalf;
    assert.equal(received.length, SESSIONS / 2, "the first consumer stopped after its last event");

    const secondHalf = consume(SESSIONS);
    await service.restart("SIGTERM");
    await submit(20, SESSIONS);
    await secondHalf;

    assert.equal(received.length, SESSIONS);
    assert.deepEqual(new Set(received.map((event) => event.result?.vaultingRequestId)), new Set(ids), "every session's event");
    assert.ok(received.every((event) => event.result?.status === VaultingStatus.SUCCEEDED));
    assert.ok(reconnects.length >= 1, "the restarts cut the stream at least once");

    // The reference order: the log read again from where the consumer started, in one stream.
    const reference: ResultEvent[] = [];
    for await (const item of client.results({ cursor: new MemoryCursorStore(startToken.trim()) })) {
      reference.push(eventOf(item));
      if (reference.length === SESSIONS) {
        break;
      }
    }
    assert.deepEqual(
      received.map((event) => event.result?.vaultingRequestId),
      reference.map((event) => event.result?.vaultingRequestId),
      "the consumers' events in the log's order",
    );
    assert.equal(await new FileCursorStore(cursorFile).load(), received.at(-1)?.resumeToken, "cursor at the last event");
  });

  test("getResult reads a completed session; an unknown id is NotFoundError", async (t) => {
    const client = connect();
    t.after(() => client.close());
    const session = await client.createSession({ vaultingRequestId: "node-get-1", labels: { order: "A-1" } });
    await service.buyerSubmits(session.sessionData, "5555555555554444");
    await waitUntil(async () => (await client.getResult("node-get-1")).status === VaultingStatus.SUCCEEDED, "the card saved");
    const result = await client.getResult("node-get-1");
    assert.equal(result.status, VaultingStatus.SUCCEEDED);
    assert.equal(result.card?.brand, "MASTERCARD");
    assert.deepEqual(result.labels, { order: "A-1" });
    await assert.rejects(client.getResult("node-get-nobody"), NotFoundError);
  });

  test("iterResults walks every page of a label filter; listResults refuses a token given other filters", async (t) => {
    const client = connect();
    t.after(() => client.close());
    const ids = Array.from({ length: 7 }, (_, i) => `node-list-${i}`);
    for (const vaultingRequestId of ids) {
      await client.createSession({ vaultingRequestId, labels: { batch: "node-list" } });
    }
    await client.createSession({ vaultingRequestId: "node-list-other", labels: { batch: "elsewhere" } });

    const listed: string[] = [];
    for await (const result of client.iterResults({ labels: { batch: "node-list" } }, { pageSize: 3 })) {
      listed.push(result.vaultingRequestId);
    }
    assert.deepEqual(listed.sort(), [...ids].sort(), "every labelled session once, no other");

    const first = await client.listResults({ labels: { batch: "node-list" } }, { pageSize: 3 });
    assert.equal(first.results.length, 3);
    assert.notEqual(first.nextPageToken, "");
    await assert.rejects(
      client.listResults({ labels: { batch: "elsewhere" } }, { pageSize: 3, pageToken: first.nextPageToken }),
      InvalidArgumentError,
    );
  });

  test("an invalid request is InvalidArgumentError with its field violations", async (t) => {
    const client = connect();
    t.after(() => client.close());
    const error = await client.createSession({ vaultingRequestId: "", merchantRegion: "sgp" }).catch((e: unknown) => e);
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.deepEqual(new Set(error.fieldViolations.map((v) => v.field)), new Set(["vaulting_request_id", "merchant_region"]));
  });

  test("when Antom stays unsure, CreateSession fails with UnavailableError carrying Antom's reason and the retry delay", async (t) => {
    const client = connect({ createSessionAttempts: 1 });
    t.after(() => client.close());
    t.after(() => service.setFaults({ unknown_result: 0 }));
    await service.setFaults({ unknown_result: -1 });
    const error = await client.createSession({ vaultingRequestId: "node-unsure" }).catch((e: unknown) => e);
    assert.ok(error instanceof UnavailableError, String(error));
    assert.equal(error.retryDelayMs, 1000);
    assert.equal(error.antomReason, "UNKNOWN_EXCEPTION");
    assert.equal(error.errorInfo?.metadata["result_status"], "U");
  });

  test("a token the service does not know is UnauthenticatedError", async (t) => {
    const client = connect({ token: "not-a-known-token" });
    t.after(() => client.close());
    await assert.rejects(client.getResult("node-get-1"), UnauthenticatedError);
  });

  test("a resume token the service refuses is ResumeTokenRefusedError, never a silent start from now", async (t) => {
    const client = connect();
    t.after(() => client.close());
    const events = client.results({ cursor: new MemoryCursorStore("not-a-token") });
    await assert.rejects(events.next(), ResumeTokenRefusedError);
  });
});
