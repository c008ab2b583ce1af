// Compile test/*.test.ts (and the sources they import) into dist-test/ for `node --test`.
import { build } from "esbuild";
import { readdirSync, rmSync } from "node:fs";

const entryPoints = readdirSync("test").filter((f) => f.endsWith(".test.ts")).map((f) => `test/${f}`);
rmSync("dist-test", { recursive: true, force: true });
await build({
  entryPoints,
  outdir: "dist-test",
  outExtension: { ".js": ".mjs" },
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: "inline",
  logLevel: "warning",
});
