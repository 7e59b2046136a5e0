#!/usr/bin/env node
// The oem CLI. Node.js 20.15 or newer (package.json "engines"): zlib.crc32 is from 20.15.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 15)) {
  process.stderr.write(`oem: error: Node.js 20.15 or newer is needed, this is ${process.version}\n`);
  process.exit(1);
}
// A young generation of 1 MiB semi-spaces (V8's default is up to 16): the builder streams gigabytes
// through short-lived buffers, and collecting them sooner keeps the peak memory down (about 30 MB
// with several artifacts at once) for no measurable time.
const { setFlagsFromString } = await import('node:v8');
setFlagsFromString('--max-semi-space-size=1');
const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
