#!/usr/bin/env node
// The oem CLI. Node.js 20.15 or newer (package.json "engines"): zlib.crc32 is from 20.15.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 15)) {
  process.stderr.write(`oem: error: Node.js 20.15 or newer is needed, this is ${process.version}\n`);
  process.exit(1);
}
const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
