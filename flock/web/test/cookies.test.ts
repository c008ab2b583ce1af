import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CookieJar, defaultPath, pathMatches } from "../src/cookies.ts";

const NOW = Date.parse("2026-11-26T12:00:00Z");

describe("CookieJar", () => {
  it("stores, sends by path and replaces by name and path", () => {
    const jar = new CookieJar();
    assert.ok(jar.store("sid=abc; Path=/; HttpOnly; SameSite=Lax", "/login", NOW));
    assert.ok(jar.store("theme=dark", "/settings/page?x=1", NOW + 1));
    assert.ok(jar.store("deep=1; Path=/settings", "/", NOW + 2));
    assert.equal(jar.header("/", NOW), "sid=abc");
    // Longer paths first.
    assert.equal(jar.header("/settings/page", NOW), "theme=dark; deep=1; sid=abc");
    assert.equal(jar.header("/settingsX", NOW), "sid=abc", "path-match is by segment");
    assert.ok(jar.store("sid=def; Path=/", "/", NOW));
    assert.equal(jar.header("/", NOW), "sid=def");
    assert.equal(jar.size, 3);
  });

  it("honours Max-Age over Expires and deletes with Max-Age=0 or a past date", () => {
    const jar = new CookieJar();
    jar.store("a=1; Max-Age=60; Expires=Wed, 21 Oct 2015 07:28:00 GMT", "/", NOW);
    jar.store("b=2; Expires=Wed, 21 Oct 2099 07:28:00 GMT", "/", NOW);
    assert.equal(jar.header("/", NOW), "a=1; b=2");
    assert.equal(jar.header("/", NOW + 61_000), "b=2", "a expired after 60 s");
    jar.store("b=; Max-Age=0", "/", NOW);
    assert.equal(jar.header("/", NOW), null);
    jar.store("c=3", "/", NOW);
    jar.store("c=gone; Expires=Thu, 01 Jan 1970 00:00:00 GMT", "/", NOW);
    assert.equal(jar.header("/", NOW), null);
  });

  it("ignores malformed Set-Cookie values whole and keeps the others", () => {
    const jar = new CookieJar();
    jar.store("keep=1; Path=/", "/", NOW);
    for (const bad of ["", "=novalue", "noequals", " =x", "bad name=x", "a\u0000b=1", "x=1\u0001", "x".repeat(5000) + "=1", "(x)=1"]) {
      assert.equal(jar.store(bad, "/", NOW), false, JSON.stringify(bad.slice(0, 20)));
    }
    // A bad Max-Age is ignored (the cookie is a session cookie), a bad Expires too.
    assert.ok(jar.store("s=1; Max-Age=soon; Expires=tomorrow", "/", NOW));
    assert.equal(jar.header("/", NOW + 1e12), "keep=1; s=1");
  });

  it("keeps at most 64 cookies, dropping the oldest", () => {
    const jar = new CookieJar();
    for (let i = 0; i < 70; i++) jar.store(`c${i}=${i}`, "/", NOW + i);
    assert.equal(jar.size, 64);
    const h = jar.header("/", NOW + 100)!;
    assert.ok(!h.includes("c0=") && !h.includes("c5=") && h.includes("c6=6") && h.includes("c69=69"));
  });

  it("computes default paths and path matches as RFC 6265 says", () => {
    assert.equal(defaultPath("/a/b/c?x=/y"), "/a/b");
    assert.equal(defaultPath("/a"), "/");
    assert.equal(defaultPath("weird"), "/");
    assert.ok(pathMatches("/a/b", "/a"));
    assert.ok(pathMatches("/a/", "/a/"));
    assert.ok(!pathMatches("/ab", "/a"));
  });
});
