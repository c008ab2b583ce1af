// A cookie jar for one app, kept by the page that owns the tunnel.
//
// Responses made by scripts (and by a service worker) cannot set cookies in
// the browser's own jar: Set-Cookie is a forbidden response header, dropped
// before anyone sees it. So the tunnel keeps the app's cookies itself, the
// way a browser would for the app's own origin: it stores what Set-Cookie
// says (RFC 6265 §5.2, the parts that matter inside one app: Path, Max-Age,
// Expires), and sends the matching ones back in a Cookie header. Domain,
// Secure and SameSite are accepted and ignored: every request through the
// tunnel goes to this one app over an encrypted channel. The jar lives as
// long as the page holding the tunnel. Invariant: a malformed Set-Cookie is
// ignored whole; it never removes or changes another cookie.

interface Cookie {
  name: string;
  value: string;
  path: string;
  /** ms since the epoch; null = a session cookie. */
  expires: number | null;
  created: number;
}

/** Most cookies per app (browsers keep ~50 per domain) and bytes per cookie. */
const MAX_COOKIES = 64;
const MAX_COOKIE_BYTES = 4096;

/** The default-path of RFC 6265 §5.1.4 for a request target "/a/b?x". */
export function defaultPath(target: string): string {
  const path = target.split("?")[0] ?? "/";
  if (!path.startsWith("/")) return "/";
  const last = path.lastIndexOf("/");
  return last <= 0 ? "/" : path.slice(0, last);
}

/** RFC 6265 §5.1.4 path-match. */
export function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith("/") || requestPath[cookiePath.length] === "/";
}

export class CookieJar {
  private cookies: Cookie[] = [];

  /** Stores one Set-Cookie header value received for `target`. Returns false if it was ignored. */
  store(setCookie: string, target: string, now = Date.now()): boolean {
    if (setCookie.length > MAX_COOKIE_BYTES) return false;
    const [pair = "", ...attrs] = setCookie.split(";");
    const eq = pair.indexOf("=");
    if (eq <= 0) return false;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (name === "" || /[\s()<>@,;:\\"/[\]?={}\u0000-\u001f\u007f]/.test(name)) return false;
    if (/[\u0000-\u001f\u007f;]/.test(value)) return false;
    let path = defaultPath(target);
    let expires: number | null = null;
    let maxAgeSeen = false;
    for (const attr of attrs) {
      const i = attr.indexOf("=");
      const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
      const val = i < 0 ? "" : attr.slice(i + 1).trim();
      if (key === "path") {
        path = val.startsWith("/") ? val : defaultPath(target);
      } else if (key === "max-age") {
        if (!/^-?\d+$/.test(val)) continue; // RFC 6265: ignore the attribute
        const secs = Number(val);
        expires = secs <= 0 ? 0 : now + secs * 1000;
        maxAgeSeen = true;
      } else if (key === "expires" && !maxAgeSeen) {
        const t = Date.parse(val);
        if (!Number.isNaN(t)) expires = t;
      }
    }
    this.cookies = this.cookies.filter((c) => !(c.name === name && c.path === path));
    if (expires !== null && expires <= now) return true; // deletion
    const old = this.cookies.length;
    this.cookies.push({ name, value, path, expires, created: now });
    if (old + 1 > MAX_COOKIES) {
      // Drop the oldest, as browsers do when a domain has too many.
      this.cookies.sort((a, b) => a.created - b.created);
      this.cookies.splice(0, this.cookies.length - MAX_COOKIES);
    }
    return true;
  }

  /** The Cookie header value for a request to `target`, or null if none match. */
  header(target: string, now = Date.now()): string | null {
    this.cookies = this.cookies.filter((c) => c.expires === null || c.expires > now);
    const path = target.split("?")[0] || "/";
    const matching = this.cookies
      .filter((c) => pathMatches(path, c.path))
      // Longer paths first, then older first (RFC 6265 §5.4).
      .sort((a, b) => b.path.length - a.path.length || a.created - b.created);
    return matching.length === 0 ? null : matching.map((c) => `${c.name}=${c.value}`).join("; ");
  }

  /** How many cookies are held (for tests and diagnostics). */
  get size(): number {
    return this.cookies.length;
  }
}
