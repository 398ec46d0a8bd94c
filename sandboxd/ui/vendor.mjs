// Copy the pinned npm packages' ES modules into assets/vendor, where the Studio imports them
// by relative path (the page has no import map: the CSP allows no inline script).
// Reproducible: the same package-lock.json gives the same bytes (checked by tests/unit).
// Run: npm ci --ignore-scripts && node vendor.mjs
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "assets", "vendor");
const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));
const files = [
  ["preact/dist/preact.module.js", "preact.js"],
  ["preact/hooks/dist/hooks.module.js", "hooks.js"],
  ["htm/dist/htm.module.js", "htm.js"],
];

mkdirSync(out, { recursive: true });
const manifest = [];
for (const [source, target] of files) {
  let text = readFileSync(join(here, "node_modules", source), "utf8");
  text = text.replace(/from\s*"preact"/g, 'from"./preact.js"');
  text = text.replace(/\n?\/\/# sourceMappingURL=.*$/m, "");
  const pkg = source.split("/")[0];
  const version = lock.packages[`node_modules/${pkg}`].version;
  const header = `// ${pkg} ${version} (npm), ${source}; copied by sandboxd/ui/vendor.mjs\n`;
  writeFileSync(join(out, target), header + text + "\n");
  const digest = createHash("sha256").update(header + text + "\n").digest("hex");
  manifest.push(`${digest}  ${target}  ${pkg}@${version}`);
}
writeFileSync(join(out, "MANIFEST.txt"), manifest.join("\n") + "\n");
console.log(manifest.join("\n"));
