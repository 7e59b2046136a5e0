#!/bin/sh
":" //; export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-131072}" MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"; exec node "$0" "$@"
/*
 * The oem CLI. Run as a program (`oem`, `./bin/run.js`, the Docker entrypoint), the line above is a
 * shell command that starts node on this file with two settings of glibc's malloc, which it reads
 * only when a process starts (a value already set wins); node reads that line as a string and a
 * comment. A build allocates and frees buffers of megabytes (pieces of the image) on several threads:
 * with glibc's defaults every freed buffer that had its own mapping raises the size up to which later
 * ones come from the heap, where freed memory stays with the process, and every thread that allocates
 * gets an arena of its own. A cold build of every format of every provider peaked at 234-248 MiB
 * without these settings and at 193-198 MiB with them. `node bin/run.js` runs without them.
 *
 * Node.js 20.15 or newer (package.json "engines"): zlib.crc32 is from 20.15.
 */
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
