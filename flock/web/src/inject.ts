// Service-worker mode must run an *unmodified* app, but a service worker
// cannot see WebSocket connections: app pages need the WebSocket shim
// (ws-shim.ts) before their own scripts. The SW adds it to every HTML page
// it serves: right after <head …> (so it runs first), else after the
// doctype or <html …>, else at the very start. Pages too large to rewrite
// pass unchanged (they still work, only their WebSockets would not).

/** Pages bigger than this are passed through as they are. */
export const MAX_INJECT_BYTES = 4 * 1024 * 1024;

function escapeAttr(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

/** `html` with `<script src="shimUrl"></script>` where it runs before any of the page's scripts. */
export function injectScript(html: string, shimUrl: string): string {
  const tag = `<script src="${escapeAttr(shimUrl)}"></script>`;
  // Comments can hold "<head>"; skip a leading run of them and the doctype.
  for (const re of [/<head(\s[^>]*)?>/gi, /<html(\s[^>]*)?>/gi, /<!doctype[^>]*>/gi]) {
    for (const m of html.matchAll(re)) {
      if (insideComment(html, m.index)) continue;
      const at = m.index + m[0].length;
      return html.slice(0, at) + tag + html.slice(at);
    }
  }
  return tag + html;
}

function insideComment(html: string, index: number): boolean {
  const open = html.lastIndexOf("<!--", index);
  if (open < 0) return false;
  const close = html.indexOf("-->", open + 4);
  return close < 0 || close > index;
}

/**
 * Whether a response with this status and Content-Type is a page to
 * rewrite. The page is decoded and re-encoded as UTF-8, so one that names
 * another charset is left as it is.
 */
export function isHtmlPage(status: number, contentType: string | null): boolean {
  if (status < 200 || status >= 300 || status === 204) return false;
  const [type = "", ...params] = (contentType ?? "").split(";").map((p) => p.trim().toLowerCase());
  if (type !== "text/html" && type !== "application/xhtml+xml") return false;
  const charset = params.find((p) => p.startsWith("charset="))?.slice("charset=".length).replace(/"/g, "");
  return charset === undefined || charset === "utf-8" || charset === "utf8";
}
