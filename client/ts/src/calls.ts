// What every call needs whatever the transport: the bearer token, and errors as the gRPC status names the
// protos (and docs/api.md) use.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** Sends `authorization: Bearer <token>` with every call (servers started with an auth token require it). */
export function bearer(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

// gRPC's status code names by number (Connect's codes have the same numbers; it spells CANCELLED "Canceled").
const STATUS_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

/** The gRPC status name of a Connect code, as the contract writes it: `Code.InvalidArgument` -> "INVALID_ARGUMENT". */
export function statusName(code: Code): string {
  return STATUS_NAMES[code] ?? `CODE_${code}`;
}

/** A failed call in the contract's terms: the status name, the server's message, the raw ConnectError. */
export interface CallFailure {
  readonly status: string;
  readonly message: string;
  readonly error: ConnectError;
}

/** Any error thrown by a call (or by the helpers here) as a CallFailure; non-RPC errors become UNKNOWN. */
export function callFailure(error: unknown): CallFailure {
  const connectError = ConnectError.from(error);
  return { status: statusName(connectError.code), message: connectError.rawMessage, error: connectError };
}

/**
 * Request fields written as text (`name=value` arguments, URL query parameters) as proto JSON, for
 * `fromJson(RequestSchema, ...)`: "true" and "false" become booleans, anything else stays a string, which proto
 * JSON reads as a number or an enum value name where the field needs one (64-bit integers keep every digit).
 */
export function textFields(pairs: Iterable<readonly [string, string]>): Record<string, string | boolean> {
  return Object.fromEntries(Array.from(pairs, ([name, value]) =>
    [name, value === "true" ? true : value === "false" ? false : value]));
}
