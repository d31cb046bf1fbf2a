// Bundles src/main.ts (and the CSS it imports) into dist/ with content-hashed names, then
// writes dist/index.html referencing them. The broker embeds dist/ at compile time and
// serves hashed names with a year-long immutable cache, index.html with no-cache.
import { build } from "esbuild";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";

const out = "dist";
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: ["es2022"],
  outdir: out,
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "eof",
  logLevel: "warning",
});
const files = Object.keys(result.metafile.outputs).map((f) => path.basename(f));
const js = files.find((f) => /^main-[A-Z0-9]+\.js$/.test(f));
const css = files.find((f) => /^main-[A-Z0-9]+\.css$/.test(f));
if (!js || !css) throw new Error(`unexpected esbuild outputs: ${files.join(", ")}`);
// No inline script or style: the page's CSP allows scripts from 'self' only.
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark light">
<title>Airlock console</title>
<link rel="stylesheet" href="/console/${css}">
<script type="module" src="/console/${js}"></script>
</head>
<body>
<noscript>The Airlock console needs JavaScript.</noscript>
<div id="app"></div>
</body>
</html>
`;
await writeFile(path.join(out, "index.html"), html);
console.log(`web/dist: ${files.join(", ")}, index.html`);
