/**
 * The vault-service client: CreateSession and GetResult with default deadlines and the retries
 * the contract allows, and a StreamResults consumer that resumes by itself.
 */
import * as grpc from "@grpc/grpc-js";
import type { PartialMessage } from "@protobuf-ts/runtime";

import { Backoff, type BackoffOptions, sleep } from "./backoff";
import { bearerHeader, bearerTokenCallCredentials, type TlsOptions, type TokenSource, tlsChannelCredentials } from "./credentials";
import { type CursorStore, FileCursorStore, MemoryCursorStore } from "./cursor";
import { isServiceError, toVaultError, UnavailableError, VaultError } from "./errors";
import {
  CreateSessionRequest,
  type CreateSessionResponse,
  GetResultRequest,
  type GetResultResponse,
  ListResultsRequest,
  type ListResultsResponse,
  type ResultEvent,
  type StreamResultsResponse,
  StreamResultsRequest,
  type UnreadableEvent,
  VaultService,
  type VaultingResult,
} from "./gen/vault/v1/vault_service";
import { VaultServiceClient } from "./gen/vault/v1/vault_service.grpc-client";

/** Default deadlines, in milliseconds. */
export const DEFAULT_DEADLINES = {
  /** CreateSession, all attempts together: Antom's own call is bounded by it. */
  createSessionMs: 30_000,
  /** GetResult (a `refresh` asks Antom first). */
  getResultMs: 10_000,
  /** One ListResults page. */
  listResultsMs: 30_000,
} as const;

/** How many times CreateSession is tried on UNAVAILABLE, the first attempt included. */
export const DEFAULT_CREATE_SESSION_ATTEMPTS = 5;

export interface VaultClientOptions {
  /**
   * Where the service listens, `host:port`. For several replicas behind a Kubernetes headless
   * Service, use `dns:///NAME.NAMESPACE.svc.cluster.local:PORT` with `loadBalancing:
   * "round_robin"`, so calls and streams spread over every replica the name resolves to.
   */
  readonly address: string;
  /** TLS for the channel (mTLS with `cert` and `key`). Without it the channel is plaintext,
   * which the service accepts on loopback only. */
  readonly tls?: TlsOptions;
  /** A bearer token sent with every call (over TLS; in plaintext only to a loopback address). */
  readonly token?: TokenSource;
  /** Deadlines of the unary calls; each call may override its own. */
  readonly deadlines?: Partial<typeof DEFAULT_DEADLINES>;
  /** CreateSession attempts on UNAVAILABLE, the first included (default 5; 1 turns retries off). */
  readonly createSessionAttempts?: number;
  /** Backoff between CreateSession attempts (a server's RetryInfo delay is the floor). */
  readonly retryBackoff?: BackoffOptions;
  /** `pick_first` (default) or `round_robin` over the addresses `address` resolves to. */
  readonly loadBalancing?: "pick_first" | "round_robin";
  /** Extra `@grpc/grpc-js` channel options; they override this client's defaults. */
  readonly channelOptions?: grpc.ChannelOptions;
}

/** Which results ListResults returns: statuses, labels and an update-time range (all optional). */
export type ResultFilter = Omit<PartialMessage<ListResultsRequest>, "pageSize" | "pageToken">;

/** Options of one unary call. */
export interface CallOptions {
  /** This call's deadline in milliseconds from now, instead of the client's default. */
  readonly deadlineMs?: number;
  /** Cancels the call (and CreateSession's pending retries). */
  readonly signal?: AbortSignal;
}

export interface ResultsOptions {
  /**
   * Where the resume token is kept: a {@link CursorStore}, or a file path for a
   * {@link FileCursorStore}. Without one the stream starts from now and resumes across
   * reconnects only, not across restarts of this process.
   */
  readonly cursor?: CursorStore | string;
  /** Only events of these vaulting requests (at most 100); empty or absent means all. */
  readonly vaultingRequestIds?: readonly string[];
  /** Ends the iteration cleanly: the item last handed out counts as processed. */
  readonly signal?: AbortSignal;
  /** Backoff between reconnects (a server's RetryInfo delay is the floor). */
  readonly reconnectBackoff?: BackoffOptions;
  /** How many reconnects in a row without receiving anything before giving up (default: never). */
  readonly maxReconnects?: number;
  /** Called before each reconnect with the error that ended the stream and the delay. */
  readonly onReconnect?: (error: VaultError, delayMs: number) => void;
}

/**
 * What {@link VaultClient.results} hands out, in the stream's order: an `event`, or, in the
 * place of an event the service cannot read (its stored data is corrupt), an `unreadable` with
 * that event's `vaultingRequestId` and `reason`: the change it recorded did happen, so re-read
 * that request with {@link VaultClient.getResult}. Both count the same for the cursor: the token
 * is saved once the loop body is done with the item. Test `kind`: TypeScript then knows which
 * field is there. A union rather than the generated `StreamResultsResponse.kind`, so that a member
 * the contract adds later does not widen what consumers must handle before this client knows it.
 */
export type StreamItem =
  | { readonly kind: "event"; readonly event: ResultEvent }
  | { readonly kind: "unreadable"; readonly unreadable: UnreadableEvent };

const SERVICE = VaultService.typeName;

/**
 * The service config applied by default: every unary call waits for a connection (up to its
 * deadline) instead of failing at once while a replica restarts, and GetResult, which only
 * reads, is retried on UNAVAILABLE by gRPC itself. CreateSession's retries are this client's
 * own (they honour the server's RetryInfo).
 */
function serviceConfig(loadBalancing: string): string {
  return JSON.stringify({
    loadBalancingConfig: [{ [loadBalancing]: {} }],
    methodConfig: [
      { name: [{ service: SERVICE, method: "CreateSession" }], waitForReady: true },
      {
        name: [{ service: SERVICE, method: "GetResult" }],
        waitForReady: true,
        retryPolicy: {
          maxAttempts: 4,
          initialBackoff: "0.1s",
          maxBackoff: "2s",
          backoffMultiplier: 2,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ],
  });
}

/**
 * Channel defaults: reconnect soon after a replica comes back (gRPC's own default waits up to
 * two minutes between connection attempts), so a resuming stream is not held back by it.
 */
const CHANNEL_DEFAULTS: grpc.ChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 5_000,
};

/** A vault-service client over one gRPC channel; {@link close} it when done. */
export class VaultClient {
  /** The generated stub on this client's channel, for calls this wrapper does not cover. */
  readonly stub: VaultServiceClient;
  private readonly plaintextToken: TokenSource | undefined;
  private readonly deadlines: typeof DEFAULT_DEADLINES;
  private readonly createSessionAttempts: number;
  private readonly retryBackoff: BackoffOptions;
  private closed = false;

  constructor(options: VaultClientOptions) {
    let credentials: grpc.ChannelCredentials;
    if (options.tls !== undefined) {
      credentials = tlsChannelCredentials(options.tls);
      if (options.token !== undefined) {
        credentials = grpc.credentials.combineChannelCredentials(credentials, bearerTokenCallCredentials(options.token));
      }
    } else {
      if (options.token !== undefined && !isLoopback(options.address)) {
        throw new TypeError(`refusing to send a bearer token in plaintext to ${options.address}: set tls`);
      }
      credentials = grpc.credentials.createInsecure();
    }
    // gRPC sends call credentials only over TLS; on loopback plaintext the token goes in metadata.
    this.plaintextToken = options.tls === undefined ? options.token : undefined;
    this.deadlines = { ...DEFAULT_DEADLINES, ...options.deadlines };
    this.createSessionAttempts = options.createSessionAttempts ?? DEFAULT_CREATE_SESSION_ATTEMPTS;
    if (!(this.createSessionAttempts >= 1)) {
      throw new RangeError("createSessionAttempts must be at least 1");
    }
    this.retryBackoff = options.retryBackoff ?? {};
    this.stub = new VaultServiceClient(options.address, credentials, {
      ...CHANNEL_DEFAULTS,
      "grpc.service_config": serviceConfig(options.loadBalancing ?? "pick_first"),
      ...options.channelOptions,
    });
  }

  /** Closes the channel; calls still running end with CANCELLED. */
  close(): void {
    this.closed = true;
    this.stub.close();
  }

  /**
   * Starts a vaulting session (CreateSession). On UNAVAILABLE it is tried again with the same
   * request (so the same `vaultingRequestId`: idempotent), after the server's RetryInfo delay
   * at least, while attempts and the deadline last. A CANCELLED this client did not cause (no
   * abort, not closed) is retried too: a server shutting down cancels the calls its transport
   * had accepted but not handed over, which a rolling restart under load meets.
   *
   * @throws {VaultError} a subclass by status code, with the status's details.
   */
  async createSession(request: PartialMessage<CreateSessionRequest>, options: CallOptions = {}): Promise<CreateSessionResponse> {
    const message = CreateSessionRequest.create(request);
    const deadline = Date.now() + (options.deadlineMs ?? this.deadlines.createSessionMs);
    const backoff = new Backoff(this.retryBackoff);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.unary<CreateSessionResponse>(
          (metadata, callOptions, callback) => this.stub.createSession(message, metadata, callOptions, callback),
          deadline,
          options.signal,
        );
      } catch (error) {
        if (!this.retriesCreateSession(error, options.signal) || attempt >= this.createSessionAttempts) {
          throw error;
        }
        const delay = backoff.next(error.retryDelayMs);
        if (Date.now() + delay >= deadline) {
          throw error;
        }
        await sleep(delay, options.signal);
      }
    }
  }

  /**
   * The current result of one vaulting request (GetResult); with `refresh`, Antom is asked
   * first when no final result is known.
   *
   * @throws {VaultError} a subclass by status code, with the status's details.
   */
  async getResult(vaultingRequestId: string, options: CallOptions & { readonly refresh?: boolean } = {}): Promise<VaultingResult> {
    const message = GetResultRequest.create({ vaultingRequestId, refresh: options.refresh ?? false });
    const response = await this.unary<GetResultResponse>(
      (metadata, callOptions, callback) => this.stub.getResult(message, metadata, callOptions, callback),
      Date.now() + (options.deadlineMs ?? this.deadlines.getResultMs),
      options.signal,
    );
    if (response.result === undefined) {
      throw new VaultError(grpc.status.INTERNAL, "GetResult answered without a result");
    }
    return response.result;
  }

  /**
   * One page of the caller's results matching `filters` (ListResults), in update-time order;
   * pass its `nextPageToken` back with the same filters for the next page.
   *
   * @throws {VaultError} a subclass by status code (a token from other filters or another
   * service is INVALID_ARGUMENT).
   */
  async listResults(
    filters: ResultFilter = {},
    options: CallOptions & { readonly pageSize?: number; readonly pageToken?: string } = {},
  ): Promise<ListResultsResponse> {
    const message = ListResultsRequest.create({ ...filters, pageSize: options.pageSize ?? 0, pageToken: options.pageToken ?? "" });
    return this.unary<ListResultsResponse>(
      (metadata, callOptions, callback) => this.stub.listResults(message, metadata, callOptions, callback),
      Date.now() + (options.deadlineMs ?? this.deadlines.listResultsMs),
      options.signal,
    );
  }

  /**
   * Every result matching `filters`, page after page (each page its own ListResults call with
   * its own deadline). A result that changes while the pages are read may appear again later;
   * none is skipped.
   */
  async *iterResults(filters: ResultFilter = {}, options: CallOptions & { readonly pageSize?: number } = {}): AsyncGenerator<VaultingResult> {
    let pageToken = "";
    do {
      const page = await this.listResults(filters, { ...options, pageToken });
      yield* page.results;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  /**
   * Every result event, in order, resuming by itself: when the stream ends with UNAVAILABLE
   * (a replica drains, a connection ages out, a replica dies) it reconnects after a jittered
   * backoff from the last token, so each event is handed out exactly once. Each is a
   * {@link StreamItem}: `{ kind: "event", event }`, or `{ kind: "unreadable", unreadable }` in
   * the place of an event the service cannot read (re-read its request with {@link getResult}).
   *
   * The token of an item is saved to the cursor store when the loop asks for the next item,
   * that is once the loop body has finished with it; checkpoints move it forward while nothing
   * matches. Stop with `signal`: the iteration then ends cleanly with the last item counted as
   * processed. Leaving the loop with `break`, `return` or an exception leaves the last item
   * unsaved, so the next run hands it out again (at least once, never lost).
   *
   * A message kind newer than this client is skipped without moving the cursor.
   *
   * @throws {ResumeTokenRefusedError} the stored token cannot be resumed from (too old,
   *   unknown): re-read what you need with {@link getResult}, clear the cursor, start again.
   * @throws {VaultError} any other status that is not UNAVAILABLE, or UNAVAILABLE after
   *   `maxReconnects` reconnects in a row without receiving anything.
   */
  async *results(options: ResultsOptions = {}): AsyncGenerator<StreamItem, void, undefined> {
    const { signal } = options;
    const store = cursorStore(options.cursor);
    const backoff = new Backoff(options.reconnectBackoff);
    const maxReconnects = options.maxReconnects ?? Infinity;
    let token = (await store.load()) ?? "";
    let saved = token;
    let reconnects = 0;
    while (!signal?.aborted) {
      const request = StreamResultsRequest.create({ resumeToken: token, vaultingRequestIds: [...(options.vaultingRequestIds ?? [])] });
      const call = this.stub.streamResults(request, await this.callMetadata());
      // The error also reaches the loop below through the stream's iterator; this listener only
      // keeps a status that arrives after the loop left (a cancel) from being an unhandled error.
      call.on("error", () => undefined);
      const cancel = (): void => call.cancel();
      signal?.addEventListener("abort", cancel, { once: true });
      try {
        for await (const message of call as AsyncIterable<StreamResultsResponse>) {
          reconnects = 0;
          backoff.reset();
          const kind = message.kind;
          if (kind.oneofKind === "event") {
            yield { kind: "event", event: kind.event };
            token = kind.event.resumeToken;
          } else if (kind.oneofKind === "unreadableEvent") {
            // Handed out like an event, so that its token is saved only once the consumer has
            // dealt with it (re-read that request): skipping it would lose the change it recorded.
            yield { kind: "unreadable", unreadable: kind.unreadableEvent };
            token = kind.unreadableEvent.resumeToken;
          } else if (kind.oneofKind === "checkpoint") {
            token = kind.checkpoint.resumeToken;
          } else {
            continue;
          }
          if (token !== saved) {
            await store.save(token);
            saved = token;
          }
          if (signal?.aborted) {
            return;
          }
        }
        // A stream the server closed with OK (not something this service does) is reopened too.
      } catch (error) {
        if (signal?.aborted) {
          return;
        }
        if (!isServiceError(error)) {
          throw error;
        }
        const failure = toVaultError(error, token !== "");
        if (!(failure instanceof UnavailableError) || reconnects >= maxReconnects) {
          throw failure;
        }
        reconnects += 1;
        const delay = backoff.next(failure.retryDelayMs);
        options.onReconnect?.(failure, delay);
        try {
          await sleep(delay, signal);
        } catch {
          return;
        }
      } finally {
        signal?.removeEventListener("abort", cancel);
        call.cancel();
      }
    }
  }

  /** Whether a failed CreateSession attempt is worth sending again with the same request. */
  private retriesCreateSession(error: unknown, signal: AbortSignal | undefined): error is VaultError {
    if (error instanceof UnavailableError) {
      return true;
    }
    return error instanceof VaultError && error.code === grpc.status.CANCELLED && signal?.aborted !== true && !this.closed;
  }

  /** Runs one unary call with `deadline`, cancelled by `signal`; failures become VaultErrors. */
  private async unary<Response>(
    start: (metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<Response>) => grpc.ClientUnaryCall,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    signal?.throwIfAborted();
    const metadata = await this.callMetadata();
    return new Promise<Response>((resolve, reject) => {
      const call = start(metadata, { deadline }, (error, response) => {
        signal?.removeEventListener("abort", cancel);
        if (error !== null) {
          reject(toVaultError(error));
        } else if (response === undefined) {
          reject(new VaultError(grpc.status.INTERNAL, "the call ended without a response"));
        } else {
          resolve(response);
        }
      });
      const cancel = (): void => call.cancel();
      signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  /** Per-call metadata: the bearer token when the channel is loopback plaintext. */
  private async callMetadata(): Promise<grpc.Metadata> {
    const metadata = new grpc.Metadata();
    if (this.plaintextToken !== undefined) {
      metadata.set("authorization", await bearerHeader(this.plaintextToken));
    }
    return metadata;
  }
}

function cursorStore(cursor: CursorStore | string | undefined): CursorStore {
  if (cursor === undefined) {
    return new MemoryCursorStore();
  }
  return typeof cursor === "string" ? new FileCursorStore(cursor) : cursor;
}

/** Whether `address` (`host:port`, optionally with a `dns:`/`ipv4:`/`ipv6:` scheme) is loopback. */
export function isLoopback(address: string): boolean {
  const target = address.replace(/^(dns:(\/\/[^/]*\/)?|ipv4:|ipv6:)/, "");
  const host = target.startsWith("[") ? target.slice(1, target.indexOf("]")) : target.replace(/:\d+$/, "");
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
