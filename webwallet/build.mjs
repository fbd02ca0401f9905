// Builds the web wallet into the server's package data (server/paycode/server/wallet_app/):
// one bundled, minified app.js (our code and the npm packages of package-lock.json), the static
// files, and a service worker whose cache name is the hash of everything it caches, so a new
// build replaces the old cache at the next online start. No network: esbuild and the packages
// come from node_modules (`npm ci`).
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || join(here, '..', 'server', 'paycode', 'server', 'wallet_app');

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: [join(here, 'src', 'app', 'main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome109', 'safari16', 'firefox115'],
  outfile: join(out, 'app.js'),
  legalComments: 'eof',
  logLevel: 'warning',
});
for (const name of readdirSync(join(here, 'static'))) {
  copyFileSync(join(here, 'static', name), join(out, name));
}
// ZXing's WebAssembly (src/app/qr_reader.js loads it from here, never from a CDN).
copyFileSync(join(here, 'node_modules', 'zxing-wasm', 'dist', 'reader', 'zxing_reader.wasm'), join(out, 'zxing_reader.wasm'));
const assets = readdirSync(out).sort();
const digest = createHash('sha256');
for (const name of assets) digest.update(name).update(readFileSync(join(out, name)));
const version = digest.digest('hex').slice(0, 16);
const worker = readFileSync(join(here, 'src', 'sw.js'), 'utf8')
  .replace('__VERSION__', version)
  .replace('__ASSETS__', JSON.stringify(['./', ...assets.filter((name) => name !== 'index.html')]));
writeFileSync(join(out, 'sw.js'), worker);
writeFileSync(join(out, 'build.json'), JSON.stringify({ version, assets: [...assets, 'sw.js'] }));
console.log(`web wallet ${version}: ${assets.length + 1} files in ${out}`);
