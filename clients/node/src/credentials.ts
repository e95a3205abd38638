/**
 * Credentials for vault-service: TLS (with a client certificate for mTLS) on the channel, and
 * bearer tokens as call credentials. The service identifies a caller by either.
 */
import { readFile } from "node:fs/promises";

import * as grpc from "@grpc/grpc-js";

/** PEM material for TLS; `cert` and `key` together make it mTLS. */
export interface TlsOptions {
  /** CA certificates that sign the server's certificate (default: the system's roots). */
  readonly ca?: Buffer;
  /** The client certificate chain, for mTLS. */
  readonly cert?: Buffer;
  /** The client certificate's private key, for mTLS. */
  readonly key?: Buffer;
}

/** Paths of PEM files for {@link readTlsFiles}. */
export interface TlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** A bearer token, or a function that returns the current one (called for every call). */
export type TokenSource = string | (() => string | Promise<string>);

/** Reads the PEM files named in `files` (mounted secrets, typically). */
export async function readTlsFiles(files: TlsFiles): Promise<TlsOptions> {
  const read = (path: string | undefined): Promise<Buffer | undefined> =>
    path === undefined ? Promise.resolve(undefined) : readFile(path);
  const [ca, cert, key] = await Promise.all([read(files.caFile), read(files.certFile), read(files.keyFile)]);
  return { ...(ca && { ca }), ...(cert && { cert }), ...(key && { key }) };
}

/** TLS channel credentials; mTLS when `tls` has both `cert` and `key`. */
export function tlsChannelCredentials(tls: TlsOptions): grpc.ChannelCredentials {
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TypeError("mTLS needs both a client certificate (cert) and its private key (key)");
  }
  return grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
}

/** The `authorization: Bearer <token>` header value for `token`, checked for use in a header. */
export async function bearerHeader(token: TokenSource): Promise<string> {
  const value = typeof token === "string" ? token : await token();
  if (value === "" || /[\s\x00-\x1f\x7f]/.test(value)) {
    throw new TypeError("a bearer token must be non-empty, without whitespace or control characters");
  }
  return `Bearer ${value}`;
}

/**
 * Call credentials that send `authorization: Bearer <token>` with every call. gRPC only sends
 * call credentials over TLS; combine them with {@link tlsChannelCredentials}.
 */
export function bearerTokenCallCredentials(token: TokenSource): grpc.CallCredentials {
  return grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    bearerHeader(token).then(
      (header) => {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", header);
        callback(null, metadata);
      },
      (error: Error) => callback(error),
    );
  });
}
