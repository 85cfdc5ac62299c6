// Packaging: the minified bundle's size, that it pulls in nothing but the module, what
// `npm pack` ships, and that the types declare what the module exports.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as client from "../src/heartbeat.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const MAX_BUNDLE_BYTES = 6 * 1024;

async function esbuild() {
  try {
    return await import("esbuild");
  } catch {
    throw new Error("esbuild is missing: run `npm ci --prefix clients/web` (scripts/test does)");
  }
}

test(`the minified bundle is at most ${MAX_BUNDLE_BYTES} bytes and bundles nothing else`, async () => {
  const { build } = await esbuild();
  const result = await build({
    entryPoints: [join(root, "src/heartbeat.js")],
    bundle: true,
    minify: true,
    format: "esm",
    outfile: join(root, "dist/heartbeat.min.js"),
    metafile: true,
    logLevel: "silent",
  });
  const size = readFileSync(join(root, "dist/heartbeat.min.js")).length;
  console.log(`bundle: ${size} bytes minified`);
  assert.ok(size <= MAX_BUNDLE_BYTES, `${size} bytes`);
  assert.deepEqual(Object.keys(result.metafile.inputs), ["src/heartbeat.js"]);
});

test("npm pack ships the module, its types and the bundle, nothing else", async () => {
  const { build } = await esbuild();
  await build({
    entryPoints: [join(root, "src/heartbeat.js")],
    bundle: true,
    minify: true,
    format: "esm",
    outfile: join(root, "dist/heartbeat.min.js"),
    logLevel: "silent",
  });
  const [packed] = JSON.parse(
    execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: root,
      encoding: "utf8",
    }),
  );
  const files = packed.files.map((file) => file.path).sort();
  assert.deepEqual(files, [
    "dist/heartbeat.min.js",
    "package.json",
    "src/heartbeat.d.ts",
    "src/heartbeat.js",
  ]);
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  assert.deepEqual(manifest.dependencies ?? {}, {}, "no runtime dependency");
  assert.equal(manifest.exports["."].types, "./src/heartbeat.d.ts");
});

test("the types declare every export of the module", () => {
  const types = readFileSync(join(root, "src/heartbeat.d.ts"), "utf8");
  for (const name of Object.keys(client)) {
    assert.match(types, new RegExp(`export declare (const|class|function) ${name}\\b`), name);
  }
});

test("every export of the packed package resolves once installed (`.` and `./min`)", () => {
  const work = mkdtempSync(join(tmpdir(), "web-player-"));
  try {
    // `npm pack` builds the bundle first (prepack), as publishing would.
    const [packed] = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", work], {
        cwd: root,
        encoding: "utf8",
      }),
    );
    writeFileSync(join(work, "package.json"), JSON.stringify({ type: "module", private: true }));
    execFileSync(
      "npm",
      ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", `./${packed.filename}`],
      { cwd: work, encoding: "utf8" },
    );
    const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    for (const entry of Object.keys(manifest.exports)) {
      const specifier = join(manifest.name, entry);
      const probe = `const m = await import(${JSON.stringify(specifier)}); ` +
        `if (typeof m.startHeartbeat !== "function") throw new Error("no startHeartbeat");`;
      execFileSync("node", ["--input-type=module", "-e", probe], { cwd: work, encoding: "utf8" });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
