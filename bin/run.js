#!/usr/bin/env node
// The oem CLI. Node.js 20.15 or newer (package.json "engines"): zlib.crc32 is from 20.15.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 15)) {
  process.stderr.write(`oem: error: Node.js 20.15 or newer is needed, this is ${process.version}\n`);
  process.exit(1);
}
const { execute, settings } = await import('@oclif/core');
// The commands are always the bundles in dist/cli/ (npm run build). Without this, oclif looks for
// TypeScript sources to transpile whenever NODE_ENV is "test" or "development" (test runners set it),
// which cost about 0.6 s of CPU per command.
settings.enableAutoTranspile = false;
await execute({ dir: import.meta.url });
