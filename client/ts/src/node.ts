// The Node.js transport: gRPC over HTTP/2, straight to a server (or to a gRPC proxy).
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { bearer } from "./calls.js";

/** Options of a Node transport. */
export interface NodeTransportOptions {
  /** Sent as `authorization: Bearer <token>` (for servers started with an auth token). */
  readonly authToken?: string;
}

/**
 * A gRPC transport to `target`: "host:port" (plaintext HTTP/2, as the servers listen by default) or a URL
 * ("http://host:port", "https://host:port" for TLS).
 */
export function nodeTransport(target: string, options: NodeTransportOptions = {}): Transport {
  const baseUrl = /^https?:\/\//.test(target) ? target : `http://${target}`;
  return createGrpcTransport({ baseUrl, interceptors: options.authToken ? [bearer(options.authToken)] : [] });
}
