/**
 * Typed errors: one class per protocol error code (PROTOCOL.md §1), mapped in one place
 * ({@link errorFromDetail}), plus the SDK's own (`ChainError`, `DisconnectedError`, …).
 */

/** The `error` object of a reply: `{code, message, retry_after_ms?}`. */
export interface ErrorDetail {
  code: string;
  message: string;
  retry_after_ms?: number;
}

/** Every error the SDK throws. `code` is the protocol code, or the SDK's own. */
export class HeraldError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** An error the server answered with (`{"error": {...}}`). */
export class ServerError extends HeraldError {
  readonly retryAfterMs: number | undefined;
  constructor(detail: ErrorDetail) {
    super(detail.code, detail.message);
    this.retryAfterMs = detail.retry_after_ms;
  }
}

export class BadRequestError extends ServerError {}
export class InvalidNameError extends ServerError {}
export class UnauthorizedError extends ServerError {}
export class ForbiddenError extends ServerError {}
export class NotAuthorError extends ServerError {}
export class ChannelNotFoundError extends ServerError {}
export class NotFoundError extends ServerError {}
export class NameTakenError extends ServerError {}
export class StaleEpochError extends ServerError {}
export class PayloadTooLargeError extends ServerError {}
export class RateLimitedError extends ServerError {}
export class InternalError extends ServerError {}

const BY_CODE: Record<string, new (d: ErrorDetail) => ServerError> = {
  bad_request: BadRequestError,
  invalid_name: InvalidNameError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_author: NotAuthorError,
  channel_not_found: ChannelNotFoundError,
  not_found: NotFoundError,
  name_taken: NameTakenError,
  stale_epoch: StaleEpochError,
  payload_too_large: PayloadTooLargeError,
  rate_limited: RateLimitedError,
  internal: InternalError,
};

/** The typed error for a server's error detail; an unknown code gives a plain `ServerError`. */
export function errorFromDetail(detail: ErrorDetail): ServerError {
  const Ctor = BY_CODE[detail.code] ?? ServerError;
  return new Ctor(detail);
}

/** The connection dropped before the request was answered (it may or may not have run). */
export class DisconnectedError extends HeraldError {
  constructor(message = "the connection dropped before the reply") {
    super("disconnected", message);
  }
}

/** The client was closed (`client.close()`), or gave up after the server refused the token. */
export class ClosedError extends HeraldError {
  constructor(message = "the client is closed") {
    super("closed", message);
  }
}

/** No reply within the request timeout. */
export class TimeoutError extends HeraldError {
  constructor(message: string) {
    super("timeout", message);
  }
}

/** The server sent something this SDK cannot read. */
export class ProtocolError extends HeraldError {
  constructor(message: string) {
    super("protocol", message);
  }
}

/** Why an entry failed verification (PROTOCOL.md §5). */
export type ChainErrorKind =
  | "malformed"
  | "content_mismatch"
  | "hash_mismatch"
  | "broken_link"
  | "gap"
  | "bad_genesis";

/** A log entry that does not verify against itself or the previous verified entry. */
export class ChainError extends HeraldError {
  readonly kind: ChainErrorKind;
  readonly channel: string;
  readonly seq: number;
  constructor(kind: ChainErrorKind, channel: string, seq: number, message: string) {
    super("chain", `channel ${channel}: entry ${seq}: ${message}`);
    this.kind = kind;
    this.channel = channel;
    this.seq = seq;
  }
}
