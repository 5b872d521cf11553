import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { cookiesOf, HttpError, isTls } from "./http.ts";

/** Name of the cookie holding the session's CSRF nonce. */
export const CSRF_COOKIE = "blacktree_console_csrf";
/** Header every mutating request carries the session's token in. */
export const CSRF_HEADER = "x-csrf-token";

/**
 * CSRF protection by a signed double submit: the session cookie holds a random nonce (HttpOnly,
 * SameSite=Strict), the page gets `HMAC(secret, nonce)` from `GET /api/session` and sends it back
 * in the `x-csrf-token` header. Another site can make the browser send the cookie but can read
 * neither the cookie nor the token, and cannot compute the token without the secret; a token
 * only matches the cookie it was made for. A request whose `Origin` is another origin is refused
 * too. @internal
 */
export class CsrfGuard {
  readonly #secret: Buffer;
  readonly #cookiePath: string;
  readonly #trustProxy: boolean;

  constructor(secret: Buffer, cookiePath: string, trustProxy: boolean) {
    this.#secret = secret;
    this.#cookiePath = cookiePath;
    this.#trustProxy = trustProxy;
  }

  /** The token of the request's session, setting a new session cookie when it has none. */
  issue(req: IncomingMessage, res: ServerResponse): string {
    let nonce = this.#nonceOf(req);
    if (nonce === undefined) {
      nonce = randomBytes(24).toString("base64url");
      const attributes = [`${CSRF_COOKIE}=${nonce}`, `Path=${this.#cookiePath}`, "HttpOnly", "SameSite=Strict"];
      if (isTls(req, this.#trustProxy)) attributes.push("Secure");
      res.setHeader("set-cookie", attributes.join("; "));
    }
    return this.#tokenOf(nonce);
  }

  /**
   * Refuses (403 `csrf`) a mutating request without the session cookie, without the header, with
   * a token that is not the cookie's, or from another origin.
   */
  check(req: IncomingMessage): void {
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== "null") {
      let host: string | undefined;
      try {
        host = new URL(origin).host;
      } catch {
        host = undefined;
      }
      if (host === undefined || host !== req.headers.host) throw new HttpError(403, "csrf", "The request comes from another origin");
    } else if (origin === "null") {
      throw new HttpError(403, "csrf", "The request comes from an opaque origin");
    }
    const nonce = this.#nonceOf(req);
    const header = req.headers[CSRF_HEADER];
    if (nonce === undefined || typeof header !== "string" || header === "") {
      throw new HttpError(403, "csrf", `A mutating request needs the session cookie and the ${CSRF_HEADER} header (from GET api/session)`);
    }
    const expected = Buffer.from(this.#tokenOf(nonce));
    const got = Buffer.from(header);
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) throw new HttpError(403, "csrf", `The ${CSRF_HEADER} header does not match the session`);
  }

  #nonceOf(req: IncomingMessage): string | undefined {
    const nonce = cookiesOf(req).get(CSRF_COOKIE);
    return nonce !== undefined && /^[A-Za-z0-9_-]{32}$/.test(nonce) ? nonce : undefined;
  }

  #tokenOf(nonce: string): string {
    return createHmac("sha256", this.#secret).update(`blacktree-console-csrf:${nonce}`).digest("base64url");
  }
}
