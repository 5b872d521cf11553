import type { IncomingMessage, ServerResponse } from "node:http";
import { OrchestratorError, type OrchestratorErrorCode } from "../errors.ts";

/**
 * What every console response carries, and how JSON leaves it: the HTTP end of the console in
 * one place. @internal
 */

/** The Content-Security-Policy of every response: only this origin's script, style and API. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
};

/** Sets the security headers; called first for every response the console writes. */
export function secure(res: ServerResponse): void {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
}

/**
 * JSON that is safe wherever a browser might read it: `<`, `>`, `&` and the two JavaScript line
 * separators are written as `\u` escapes, so a payload holding `</script>` or `<img onerror>`
 * stays inert even if a response were ever sniffed or embedded as HTML.
 */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Writes a JSON response (never cached: it shows live state). */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = safeJson(value);
  res.statusCode = status;
  res.setHeader("content-type", "application/json; charset=utf-8");
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", Buffer.byteLength(body));
  res.end(body);
}

/** An error the console answers with its own status and code. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const STATUS_OF: Partial<Record<OrchestratorErrorCode, number>> = {
  invalid_argument: 400,
  not_found: 404,
  precondition_failed: 409,
  permission_denied: 403,
  unauthenticated: 403,
  unavailable: 503,
  queue_closed: 503,
  deadline_exceeded: 504,
  resource_exhausted: 429,
};

/**
 * The status and `{ error: { code, message, field? } }` body of any error a route threw; `field`
 * names the bad input of an `invalid_argument` (so a form can mark it).
 */
export function errorResponse(error: unknown): { status: number; body: { error: { code: string; message: string; field?: string } } } {
  if (error instanceof HttpError) return { status: error.status, body: { error: { code: error.code, message: error.message } } };
  const e = OrchestratorError.from(error);
  const field = e.code === "invalid_argument" ? e.details?.field : undefined;
  return { status: STATUS_OF[e.code] ?? 500, body: { error: { code: e.code, message: e.rawMessage, ...(typeof field === "string" ? { field } : {}) } } };
}

/** Writes an error as JSON. */
export function sendError(res: ServerResponse, error: unknown): void {
  const { status, body } = errorResponse(error);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, body);
}

/**
 * Reads a JSON request body of at most `maxBytes`.
 * @throws {HttpError} 415 for another content type, 413 when too large, 400 when not JSON.
 */
export async function readJson(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const type = String(req.headers["content-type"] ?? "");
  const length = Number(req.headers["content-length"] ?? 0);
  if (length === 0 && req.headers["transfer-encoding"] === undefined) return {};
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new HttpError(415, "unsupported_media_type", "Expected a body of type application/json");
  if (length > maxBytes) throw new HttpError(413, "payload_too_large", `The body is larger than ${maxBytes} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new HttpError(413, "payload_too_large", `The body is larger than ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, "invalid_argument", "The body is not valid JSON");
  }
}

/** The cookies of a request, by name (the first of duplicates wins). */
export function cookiesOf(req: IncomingMessage): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const part of String(req.headers.cookie ?? "").split(";")) {
    const at = part.indexOf("=");
    if (at <= 0) continue;
    const name = part.slice(0, at).trim();
    if (!cookies.has(name)) cookies.set(name, part.slice(at + 1).trim());
  }
  return cookies;
}

/** Whether the request came over TLS (directly, or as a trusting proxy says). */
export function isTls(req: IncomingMessage, trustProxy: boolean): boolean {
  if ((req.socket as { encrypted?: boolean }).encrypted === true) return true;
  return trustProxy && String(req.headers["x-forwarded-proto"] ?? "").split(",")[0]?.trim() === "https";
}
