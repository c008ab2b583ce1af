import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChannelStream } from "../src/channel-stream.ts";
import { CookieJar } from "../src/cookies.ts";
import { tunnelFetch } from "../src/fetch.ts";
import { FakeChannel, tick } from "./fakes.ts";

const te = new TextEncoder();

/** A fake app: for each channel, waits for a full request head (+ body) then plays `respond`. */
function server(respond: (req: string, ch: FakeChannel) => void | Promise<void>): { open: (app: string) => ChannelStream; channels: FakeChannel[]; requests: string[] } {
  const channels: FakeChannel[] = [];
  const requests: string[] = [];
  const open = (app: string): ChannelStream => {
    const ch = new FakeChannel(`http/1.1 ${app}`);
    channels.push(ch);
    const s = new ChannelStream(ch);
    const origSend = ch.send.bind(ch);
    let answered = false;
    ch.send = (d: Uint8Array) => {
      origSend(d);
      const text = ch.sentText();
      const headEnd = text.indexOf("\r\n\r\n");
      if (answered || headEnd < 0) return;
      const cl = /content-length: (\d+)/i.exec(text.slice(0, headEnd));
      const chunked = /transfer-encoding: chunked/i.test(text.slice(0, headEnd));
      const bytes = te.encode(text.slice(0, headEnd + 4)).byteLength;
      const total = ch.sent.reduce((n, m) => n + m.byteLength, 0);
      const complete = chunked ? text.endsWith("0\r\n\r\n") : total >= bytes + Number(cl?.[1] ?? 0);
      if (!complete) return;
      answered = true;
      requests.push(text);
      queueMicrotask(() => void respond(text, ch));
    };
    queueMicrotask(() => ch.open());
    return s;
  };
  return { open, channels, requests };
}

describe("tunnelFetch", () => {
  it("sends a GET with Host and Connection: close and streams the response", async () => {
    const srv = server((_, ch) => {
      ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"));
      ch.deliver(te.encode("6\r\n world\r\n0\r\n\r\n"));
    });
    const resp = await tunnelFetch(srv.open, "notes", "/list?x=1", { headers: { "X-Test": "1", Cookie: "a=b", Connection: "keep-alive" } });
    assert.equal(resp.status, 200);
    assert.equal(resp.headers.get("content-type"), "text/plain");
    assert.equal(resp.url, "http://notes/list?x=1");
    assert.equal(await resp.text(), "hello world");
    const req = srv.requests[0]!;
    assert.match(req, /^GET \/list\?x=1 HTTP\/1.1\r\nhost: notes\r\n/);
    assert.match(req, /\r\nx-test: 1\r\n/);
    assert.match(req, /\r\ncookie: a=b\r\n/, "Cookie is passed through");
    assert.match(req, /\r\nconnection: close\r\n/);
    assert.doesNotMatch(req, /keep-alive/);
    assert.equal(srv.channels[0]!.label, "http/1.1 notes");
    await tick();
    assert.equal(srv.channels[0]!.readyState, "closed", "channel closed after the response");
  });

  it("sends string, bytes and Blob bodies with Content-Length", async () => {
    for (const [body, expect, ct] of [
      ["héllo", "héllo", "text/plain;charset=UTF-8"],
      [new Uint8Array([1, 2, 3]), "\x01\x02\x03", null],
      [new Blob(["blob!"], { type: "application/x-test" }), "blob!", "application/x-test"],
      [new URLSearchParams({ a: "1 2" }), "a=1+2", "application/x-www-form-urlencoded;charset=UTF-8"],
    ] as const) {
      const srv = server((_, ch) => ch.deliver(te.encode("HTTP/1.1 204 No Content\r\n\r\n")));
      const resp = await tunnelFetch(srv.open, "a", "http://ignored/p", { method: "post", body });
      assert.equal(resp.status, 204);
      assert.equal(resp.body, null);
      const req = srv.requests[0]!;
      assert.match(req, /^POST \/p HTTP\/1.1\r\n/);
      assert.match(req, new RegExp(`Content-Length: ${te.encode(expect).byteLength}\\r\\n`));
      assert.ok(req.endsWith("\r\n\r\n" + expect), req);
      if (ct) assert.match(req, new RegExp(`content-type: ${ct.replace(/[+]/g, "\\+")}\\r\\n`, "i"));
    }
  });

  it("sends a ReadableStream body chunked", async () => {
    const srv = server((_, ch) => ch.deliver(te.encode("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")));
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(te.encode("part1"));
        c.enqueue(te.encode("part-two"));
        c.close();
      },
    });
    const resp = await tunnelFetch(srv.open, "a", "/up", { method: "PUT", body, duplex: "half" } as RequestInit);
    assert.equal(await resp.text(), "ok");
    assert.ok(srv.requests[0]!.endsWith("Transfer-Encoding: chunked\r\n\r\n5\r\npart1\r\n8\r\npart-two\r\n0\r\n\r\n"), srv.requests[0]);
  });

  it("follows same-app redirects and turns 303 into GET", async () => {
    let n = 0;
    const srv = server((_, ch) => {
      n++;
      if (n === 1) ch.deliver(te.encode("HTTP/1.1 303 See Other\r\nLocation: /done\r\nContent-Length: 0\r\n\r\n"));
      else ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"));
    });
    const resp = await tunnelFetch(srv.open, "a", "/form", { method: "POST", body: "x=1" });
    assert.equal(await resp.text(), "done");
    assert.equal(resp.redirected, true);
    assert.equal(resp.url, "http://a/done");
    assert.match(srv.requests[1]!, /^GET \/done HTTP\/1.1\r\n/);
    assert.doesNotMatch(srv.requests[1]!, /content-type/i);
  });

  it("returns redirects as-is with redirect: manual or to another host", async () => {
    for (const [loc, init] of [["/x", { redirect: "manual" }], ["https://elsewhere.example/", {}]] as const) {
      const srv = server((_, ch) => ch.deliver(te.encode(`HTTP/1.1 302 Found\r\nLocation: ${loc}\r\nContent-Length: 0\r\n\r\n`)));
      const resp = await tunnelFetch(srv.open, "a", "/", init as RequestInit);
      assert.equal(resp.status, 302);
      assert.equal(srv.requests.length, 1);
    }
  });

  it("rejects a malformed response with the parser's message and closes the channel", async () => {
    const srv = server((_, ch) => ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")));
    await assert.rejects(tunnelFetch(srv.open, "a", "/"), /conflicting Content-Length/);
    await tick();
    assert.equal(srv.channels[0]!.readyState, "closed");
  });

  it("errors the body when the channel closes early", async () => {
    const srv = server((_, ch) => {
      ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"));
      ch.remoteClose();
    });
    const resp = await tunnelFetch(srv.open, "a", "/");
    await assert.rejects(resp.text(), /after 3 of 10 body bytes/);
  });

  it("reads a close-delimited body to the end of the channel", async () => {
    const srv = server((_, ch) => {
      ch.deliver(te.encode("HTTP/1.0 200 OK\r\n\r\nall of "));
      ch.deliver(te.encode("it"));
      ch.remoteClose();
    });
    assert.equal(await (await tunnelFetch(srv.open, "a", "/")).text(), "all of it");
  });

  it("aborting closes the channel, before and after the head", async () => {
    {
      const srv = server(() => {});
      const ac = new AbortController();
      const p = tunnelFetch(srv.open, "a", "/", { signal: ac.signal });
      await tick();
      ac.abort();
      await assert.rejects(p, (e: unknown) => (e as Error).name === "AbortError");
      await tick();
      assert.equal(srv.channels[0]!.readyState, "closed");
    }
    {
      const srv = server((_, ch) => ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")));
      const ac = new AbortController();
      const resp = await tunnelFetch(srv.open, "a", "/", { signal: ac.signal });
      const reader = resp.body!.getReader();
      assert.equal(new TextDecoder().decode((await reader.read()).value), "abc");
      ac.abort();
      await assert.rejects(reader.read());
      assert.equal(srv.channels[0]!.readyState, "closed");
    }
    {
      const ac = new AbortController();
      ac.abort();
      const srv = server(() => {});
      await assert.rejects(tunnelFetch(srv.open, "a", "/", { signal: ac.signal }), (e: unknown) => (e as Error).name === "AbortError");
      assert.equal(srv.channels.length, 0, "no channel opened for an already-aborted request");
    }
  });

  it("cancelling the response body closes the channel", async () => {
    const srv = server((_, ch) => ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")));
    const resp = await tunnelFetch(srv.open, "a", "/");
    await resp.body!.cancel();
    assert.equal(srv.channels[0]!.readyState, "closed");
  });

  it("skips 100 Continue and rejects a GET with a body", async () => {
    const srv = server((_, ch) => ch.deliver(te.encode("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")));
    assert.equal(await (await tunnelFetch(srv.open, "a", "/", { method: "POST", body: "x" })).text(), "ok");
    await assert.rejects(tunnelFetch(srv.open, "a", "/", { method: "GET", body: "x" }), /GET request cannot have a body/);
  });

  it("takes method, URL and headers from a Request", async () => {
    const srv = server((_, ch) => ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")));
    await tunnelFetch(srv.open, "a", new Request("http://localhost/app/a/ignored?q", { method: "DELETE", headers: { "x-k": "v" } }));
    assert.match(srv.requests[0]!, /^DELETE \/app\/a\/ignored\?q HTTP\/1.1\r\n/);
    assert.match(srv.requests[0]!, /x-k: v/);
  });

  it("keeps the app's cookies across requests and a redirect, unless credentials are omitted", async () => {
    const srv = server((req, ch) => {
      if (req.startsWith("POST /guestbook ")) {
        ch.deliver(te.encode("HTTP/1.1 303 See Other\r\nLocation: /\r\nSet-Cookie: who=ada; Path=/; HttpOnly\r\nSet-Cookie: bad\r\nContent-Length: 0\r\n\r\n"));
      } else {
        ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
      }
    });
    const jar = new CookieJar();
    const resp = await tunnelFetch(srv.open, "a", "/guestbook", { method: "POST", body: "name=ada" }, jar);
    assert.equal(resp.status, 200);
    assert.equal(resp.redirected, true);
    assert.doesNotMatch(srv.requests[0]!, /cookie:/i, "no cookie before the app set one");
    assert.match(srv.requests[1]!, /^GET \/ HTTP\/1.1\r\n/);
    assert.match(srv.requests[1]!, /\r\ncookie: who=ada\r\n/, "the redirect's GET carries the cookie just set");
    await tunnelFetch(srv.open, "a", "/x", {}, jar);
    assert.match(srv.requests[2]!, /\r\ncookie: who=ada\r\n/);
    await tunnelFetch(srv.open, "a", "/x", { credentials: "omit" }, jar);
    assert.doesNotMatch(srv.requests[3]!, /cookie:/i, "credentials: omit");
    await tunnelFetch(srv.open, "a", "/x", { headers: { Cookie: "mine=1" } }, jar);
    assert.match(srv.requests[4]!, /\r\ncookie: mine=1\r\n/, "an explicit Cookie header wins");
    assert.equal(jar.size, 1, "the malformed Set-Cookie was ignored");
  });

  it("replaces a channel that closes before it opens, a few times at most", async () => {
    let closeFirst = 2;
    const opened: FakeChannel[] = [];
    const open = (app: string): ChannelStream => {
      const ch = new FakeChannel(`http/1.1 ${app}`);
      opened.push(ch);
      const s = new ChannelStream(ch);
      if (closeFirst > 0) {
        closeFirst--;
        queueMicrotask(() => ch.remoteClose());
        return s;
      }
      const origSend = ch.send.bind(ch);
      ch.send = (d: Uint8Array) => {
        origSend(d);
        if (ch.sentText().includes("\r\n\r\n")) queueMicrotask(() => ch.deliver(te.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")));
      };
      queueMicrotask(() => ch.open());
      return s;
    };
    const resp = await tunnelFetch(open, "a", "/", { method: "POST", body: "x" });
    assert.equal(await resp.text(), "ok");
    assert.equal(opened.length, 3, "two replaced, the third carried the request");
    assert.equal(opened[0]!.sent.length + opened[1]!.sent.length, 0, "nothing was sent on the closed ones");

    closeFirst = 10;
    opened.length = 0;
    await assert.rejects(tunnelFetch(open, "a", "/"), /closed before it opened/);
    assert.equal(opened.length, 3, "gives up after three");
  });
});
