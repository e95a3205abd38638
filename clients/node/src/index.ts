/**
 * vault-service's Node.js client. Start with {@link VaultClient}; see the README.
 */
export { Backoff, type BackoffOptions } from "./backoff";
export {
  type CallOptions,
  DEFAULT_CREATE_SESSION_ATTEMPTS,
  DEFAULT_DEADLINES,
  type ResultFilter,
  type ResultsOptions,
  type StreamItem,
  VaultClient,
  type VaultClientOptions,
} from "./client";
export {
  bearerTokenCallCredentials,
  readTlsFiles,
  type TlsFiles,
  type TlsOptions,
  tlsChannelCredentials,
  type TokenSource,
} from "./credentials";
export { type CursorStore, FileCursorStore, MemoryCursorStore } from "./cursor";
export {
  AlreadyExistsError,
  ANTOM_DOMAIN,
  DeadlineExceededError,
  decodeStatusDetails,
  type ErrorInfo,
  FailedPreconditionError,
  type FieldViolation,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ResumeTokenRefusedError,
  type StatusDetails,
  toVaultError,
  UnauthenticatedError,
  UnavailableError,
  VaultError,
} from "./errors";
export * from "./gen/vault/v1/vault_service";
export { VaultServiceClient } from "./gen/vault/v1/vault_service.grpc-client";
export { status as StatusCode } from "@grpc/grpc-js";
