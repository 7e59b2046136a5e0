/**
 * Builds a Container Linux-layout test image without root.
 *
 *   npm run make:image -- --out DIR [--generation coreos|flatcar|flatcar-sysext] [--size small|full]
 *                         [--version X.Y.Z] [--usr-data-mb N] [--bz2]
 *
 * Writes DIR/{generation}_production_image.bin (sparse), its .version.txt and, with --bz2, the
 * .bin.bz2 next to it; for flatcar-sysext also Flatcar's OEM extensions the image lists, as
 * DIR/oem-<platform>.raw (what a release directory holds beside the image; make:mirror publishes them).
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildTestImage, writeOemExtensions, type Generation, type ImageSize } from './lib/test-image.js';
import { compressBzip2 } from './lib/mirror.js';

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: '.' },
    generation: { type: 'string', default: 'flatcar' },
    size: { type: 'string', default: 'small' },
    version: { type: 'string' },
    'usr-data-mb': { type: 'string' },
    bz2: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (values.help) {
  process.stdout.write('usage: make-test-image --out DIR [--generation coreos|flatcar|flatcar-sysext] [--size small|full] [--version X.Y.Z] [--usr-data-mb N] [--bz2]\n');
  process.exit(0);
}
const generation = values.generation as Generation;
const size = values.size as ImageSize;
if (!['coreos', 'flatcar', 'flatcar-sysext'].includes(generation) || !['small', 'full'].includes(size)) {
  process.stderr.write('make-test-image: --generation is coreos, flatcar or flatcar-sysext, --size is small or full\n');
  process.exit(2);
}
const out = resolve(values.out);
await mkdir(out, { recursive: true });
const t0 = Date.now();
const img = await buildTestImage({
  path: join(out, `${generation}_production_image.bin`),
  generation,
  size,
  ...(values.version ? { version: values.version } : {}),
  ...(values['usr-data-mb'] ? { usrDataBytes: Number(values['usr-data-mb']) * 1024 * 1024 } : {}),
});
process.stdout.write(`wrote ${img.path} (${img.size} bytes, ${generation} ${img.version}) in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
if (img.versionTxtPath) process.stdout.write(`wrote ${img.versionTxtPath}\n`);
if (generation === 'flatcar-sysext') {
  for (const f of await writeOemExtensions(out, img.version)) process.stdout.write(`wrote ${f}\n`);
}
if (values.bz2) {
  const tool = await compressBzip2(img.path, `${img.path}.bz2`);
  process.stdout.write(`wrote ${img.path}.bz2 (compressed with ${tool})\n`);
}
