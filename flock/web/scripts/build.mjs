// Bundle the library, the service worker and the portal page into dist/.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
const common = { bundle: true, format: "esm", target: "es2022", sourcemap: true, minify: true, logLevel: "warning" };
await build({ ...common, entryPoints: { intrust: "src/index.ts" }, outdir: "dist" });
await build({ ...common, entryPoints: { portal: "src/portal.ts" }, outdir: "dist" });
// The service worker is a classic script so it registers in every browser.
await build({ ...common, format: "iife", entryPoints: { sw: "src/sw.ts" }, outdir: "dist" });
await build({ ...common, format: "iife", entryPoints: { "ws-shim": "src/ws-shim.ts" }, outdir: "dist" });
copyFileSync("src/index.html", "dist/index.html");
copyFileSync("src/portal.css", "dist/portal.css");
