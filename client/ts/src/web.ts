// The browser transport: gRPC-Web over fetch, through a proxy that translates it to gRPC (Envoy's grpc_web
// filter). Browsers cannot speak gRPC itself: they cannot read HTTP/2 trailers.
import type { Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { bearer } from "./calls.js";

/** Options of a browser transport. */
export interface WebTransportOptions {
  /** Sent as `authorization: Bearer <token>` (the proxy's CORS policy must allow the header). */
  readonly authToken?: string;
}

/** A gRPC-Web transport to the proxy at `baseUrl` (such as "https://api.example.com" or the page's origin). */
export function webTransport(baseUrl: string, options: WebTransportOptions = {}): Transport {
  return createGrpcWebTransport({ baseUrl, interceptors: options.authToken ? [bearer(options.authToken)] : [] });
}
