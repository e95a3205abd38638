/**
 * Typed errors of vault-service calls, with the `google.rpc` details the service attaches.
 *
 * The service reports every failure as a gRPC status whose `grpc-status-details-bin` trailer
 * carries a `google.rpc.Status` with details (see the error section of the contract). Each call
 * of this client converts a failed status once, here, into a {@link VaultError} subclass chosen
 * by the status code, so callers branch with `instanceof` and read the details as plain fields
 * instead of decoding protobuf themselves.
 */
import * as grpc from "@grpc/grpc-js";

import type { Any } from "./gen/google/protobuf/any";
import { BadRequest, ErrorInfo as ErrorInfoMessage, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

/** The trailer that carries the binary `google.rpc.Status` with the details. */
const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** The `ErrorInfo.domain` of Antom's own result codes. */
export const ANTOM_DOMAIN = "antom";

/** One invalid request field (`google.rpc.BadRequest.FieldViolation`). */
export interface FieldViolation {
  /** The field's proto path, for example `vaulting_request_id` or `env.time_zone_offset`. */
  readonly field: string;
  /** Why the value was refused, in the service's words. */
  readonly description: string;
}

/** `google.rpc.ErrorInfo`: a machine-readable reason within a domain. */
export interface ErrorInfo {
  /** For Antom's verdicts, Antom's `resultCode` (for example `REPEAT_REQ_INCONSISTENT`). */
  readonly reason: string;
  /** `antom` for Antom's verdicts. */
  readonly domain: string;
  /** For Antom's verdicts: `result_status` and `result_message`. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** The details decoded from a status's `grpc-status-details-bin` trailer. */
export interface StatusDetails {
  readonly fieldViolations: readonly FieldViolation[];
  readonly errorInfo: ErrorInfo | undefined;
  /** `google.rpc.RetryInfo.retry_delay` in milliseconds: wait this long before retrying. */
  readonly retryDelayMs: number | undefined;
}

const NO_DETAILS: StatusDetails = { fieldViolations: [], errorInfo: undefined, retryDelayMs: undefined };

/**
 * A failed vault-service call. Subclasses name the status codes a caller acts on; any other
 * code (INTERNAL, CANCELLED, ...) is a plain VaultError.
 */
export class VaultError extends Error {
  /** The gRPC status code. */
  readonly code: grpc.status;
  /** The status message, for logs (it never carries card data). */
  readonly details: string;
  /** Invalid request fields (INVALID_ARGUMENT), by proto path. */
  readonly fieldViolations: readonly FieldViolation[];
  /** Why the call failed, machine-readable; for Antom's verdicts, domain `antom`. */
  readonly errorInfo: ErrorInfo | undefined;
  /** How long the service asks the caller to wait before retrying, in milliseconds. */
  readonly retryDelayMs: number | undefined;

  constructor(code: grpc.status, details: string, statusDetails: StatusDetails = NO_DETAILS) {
    super(`${grpc.status[code] ?? code}: ${details}`);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
    this.fieldViolations = statusDetails.fieldViolations;
    this.errorInfo = statusDetails.errorInfo;
    this.retryDelayMs = statusDetails.retryDelayMs;
  }

  /** Antom's `resultCode` when Antom's verdict caused the failure. */
  get antomReason(): string | undefined {
    return this.errorInfo?.domain === ANTOM_DOMAIN ? this.errorInfo.reason : undefined;
  }

  /** Antom's `resultMessage` (for logs, not for buyers) when Antom's verdict caused the failure. */
  get antomResultMessage(): string | undefined {
    return this.errorInfo?.domain === ANTOM_DOMAIN ? this.errorInfo.metadata["result_message"] : undefined;
  }
}

/** A request field is missing or invalid ({@link VaultError.fieldViolations} names each); also
 * Antom's PARAM_ILLEGAL. Do not retry unchanged. */
export class InvalidArgumentError extends VaultError {}

/**
 * StreamResults refused the resume token: malformed, unknown, or too old (the event log no
 * longer holds the events after it). Events may have been missed: re-read the vaulting
 * requests you care about with `getResult`, then follow the stream from now (clear the cursor).
 */
export class ResumeTokenRefusedError extends InvalidArgumentError {}

/** The vaulting request id is in use with other parameters or by another caller. */
export class AlreadyExistsError extends VaultError {}

/** No vaulting request with that id that this caller may see. */
export class NotFoundError extends VaultError {}

/** Antom refused definitively ({@link VaultError.antomReason}); use a new vaulting request id
 * once the cause is fixed. */
export class FailedPreconditionError extends VaultError {}

/** Antom or the service is unavailable for now; retry after {@link VaultError.retryDelayMs}
 * (CreateSession with the same id and parameters is safe to retry). */
export class UnavailableError extends VaultError {}

/** The call's deadline passed. */
export class DeadlineExceededError extends VaultError {}

/** No credentials, or credentials the service does not accept. */
export class UnauthenticatedError extends VaultError {}

/** The caller is known but not allowed to make this call. */
export class PermissionDeniedError extends VaultError {}

type VaultErrorClass = new (code: grpc.status, details: string, statusDetails: StatusDetails) => VaultError;

const ERROR_CLASSES: ReadonlyMap<grpc.status, VaultErrorClass> = new Map<grpc.status, VaultErrorClass>([
  [grpc.status.INVALID_ARGUMENT, InvalidArgumentError],
  [grpc.status.ALREADY_EXISTS, AlreadyExistsError],
  [grpc.status.NOT_FOUND, NotFoundError],
  [grpc.status.FAILED_PRECONDITION, FailedPreconditionError],
  [grpc.status.UNAVAILABLE, UnavailableError],
  [grpc.status.DEADLINE_EXCEEDED, DeadlineExceededError],
  [grpc.status.UNAUTHENTICATED, UnauthenticatedError],
  [grpc.status.PERMISSION_DENIED, PermissionDeniedError],
]);

/** The field name of StreamResultsRequest whose refusal means "resume from elsewhere". */
const RESUME_TOKEN_FIELD = "resume_token";

/**
 * The typed error for a failed call's status. `resuming` says the call was a StreamResults
 * opened from a resume token, where INVALID_ARGUMENT naming `resume_token` is the
 * {@link ResumeTokenRefusedError} the consumer must handle.
 */
export function toVaultError(error: grpc.StatusObject | grpc.ServiceError, resuming = false): VaultError {
  const statusDetails = decodeStatusDetails(error.metadata);
  let errorClass = ERROR_CLASSES.get(error.code) ?? VaultError;
  if (
    resuming &&
    errorClass === InvalidArgumentError &&
    statusDetails.fieldViolations.some((violation) => violation.field === RESUME_TOKEN_FIELD)
  ) {
    errorClass = ResumeTokenRefusedError;
  }
  return new errorClass(error.code, error.details, statusDetails);
}

/**
 * Decodes the `google.rpc` details of a status from its trailers. Detail types this client does
 * not know are skipped, and an undecodable trailer yields no details: a status must always
 * become an error, never a crash while reading it.
 */
export function decodeStatusDetails(metadata: grpc.Metadata | undefined): StatusDetails {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (raw === undefined || typeof raw === "string") {
    return NO_DETAILS;
  }
  let status: Status;
  try {
    status = Status.fromBinary(raw);
  } catch {
    return NO_DETAILS;
  }
  const fieldViolations: FieldViolation[] = [];
  let errorInfo: ErrorInfo | undefined;
  let retryDelayMs: number | undefined;
  for (const detail of status.details) {
    try {
      switch (messageName(detail)) {
        case "google.rpc.BadRequest":
          for (const violation of BadRequest.fromBinary(detail.value).fieldViolations) {
            fieldViolations.push({ field: violation.field, description: violation.description });
          }
          break;
        case "google.rpc.ErrorInfo": {
          const info = ErrorInfoMessage.fromBinary(detail.value);
          errorInfo = { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
          break;
        }
        case "google.rpc.RetryInfo": {
          const delay = RetryInfo.fromBinary(detail.value).retryDelay;
          if (delay !== undefined) {
            retryDelayMs = Number(delay.seconds) * 1000 + Math.floor(delay.nanos / 1e6);
          }
          break;
        }
        default:
          break;
      }
    } catch {
      // A malformed detail is skipped; the others still count.
    }
  }
  return { fieldViolations, errorInfo, retryDelayMs };
}

/** The full message name of an `Any` (`type.googleapis.com/google.rpc.BadRequest` → ...). */
function messageName(detail: Any): string {
  return detail.typeUrl.slice(detail.typeUrl.lastIndexOf("/") + 1);
}

/** Whether `error` is a gRPC status error (as `@grpc/grpc-js` rejects calls with). */
export function isServiceError(error: unknown): error is grpc.ServiceError {
  return (
    error instanceof Error &&
    typeof (error as Partial<grpc.ServiceError>).code === "number" &&
    (error as Partial<grpc.ServiceError>).metadata instanceof grpc.Metadata
  );
}
