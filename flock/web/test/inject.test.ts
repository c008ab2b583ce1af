import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { injectScript, isHtmlPage } from "../src/inject.ts";

const TAG = '<script src="https://f.example/ws-shim.js"></script>';

describe("injectScript", () => {
  it("goes right after <head>, so the shim runs before the page's scripts", () => {
    const html = '<!doctype html><html lang="en"><head><meta charset="utf-8"><script src="app.js"></script></head></html>';
    const out = injectScript(html, "https://f.example/ws-shim.js");
    assert.equal(out, `<!doctype html><html lang="en"><head>${TAG}<meta charset="utf-8"><script src="app.js"></script></head></html>`);
  });

  it("falls back to <html>, the doctype, then the start; skips tags in comments", () => {
    assert.equal(injectScript("<HTML class=x><body>", "https://f.example/ws-shim.js"), `<HTML class=x>${TAG}<body>`);
    assert.equal(injectScript("<!DOCTYPE html><p>hi", "https://f.example/ws-shim.js"), `<!DOCTYPE html>${TAG}<p>hi`);
    assert.equal(injectScript("<p>bare", "https://f.example/ws-shim.js"), `${TAG}<p>bare`);
    assert.equal(injectScript("<!-- <head> --><head><title>t</title>", "https://f.example/ws-shim.js"), `<!-- <head> --><head>${TAG}<title>t</title>`);
    assert.equal(injectScript("", "https://f.example/ws-shim.js"), TAG);
    assert.equal(injectScript("<headline>", "https://f.example/ws-shim.js"), `${TAG}<headline>`, "<headline> is not <head>");
  });

  it("escapes the URL in the attribute", () => {
    assert.equal(injectScript("<head>", 'x"><b>'), '<head><script src="x&quot;>&lt;b>"></script>');
  });

  it("only rewrites successful HTML pages", () => {
    assert.ok(isHtmlPage(200, "text/html; charset=utf-8"));
    assert.ok(isHtmlPage(200, "Application/XHTML+XML"));
    assert.ok(!isHtmlPage(200, "text/plain"));
    assert.ok(!isHtmlPage(200, null));
    assert.ok(!isHtmlPage(404, "text/html"));
    assert.ok(!isHtmlPage(204, "text/html"));
    assert.ok(!isHtmlPage(304, "text/html"));
    assert.ok(isHtmlPage(200, 'text/html; charset="UTF-8"'));
    assert.ok(!isHtmlPage(200, "text/html; charset=iso-8859-1"), "re-encoding would garble it");
  });
});
