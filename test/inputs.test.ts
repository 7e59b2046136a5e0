/**
 * build/inputs.ts: the agent as a build embeds it. The real x64 agent is about 108 MB unpacked: xz's
 * output goes straight into the file, whatever its size (execa's own output buffer stops at 100 MB).
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentExecutable, agentXz, findAgent } from '../src/build/inputs.js';
import { hostFile } from '../src/shared/safe-fs.js';

let work: string;
let elf: string;
let digest: string;
// Larger than execa's default maxBuffer (100,000,000), as the real agent is.
const SIZE = 110 * 1000 * 1000;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'oem-inputs-'));
  elf = join(work, 'agent');
  const fh = await open(elf, 'wx');
  // An ELF header, some varied bytes, and zeros up to SIZE (cheap to compress).
  const head = Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 7919 + (i >> 9)) & 0xff));
  Buffer.from('\x7fELF', 'latin1').copy(head, 0);
  await fh.write(head, 0, head.length, 0);
  await fh.truncate(SIZE);
  await fh.close();
  digest = createHash('sha256').update(await readFile(elf)).digest('hex');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('the agent', () => {
  it('an executable over 100 MB is compressed into the work directory, and unpacked again whole', async () => {
    const found = await findAgent({ agent: elf }, 'amd64-usr');
    expect(found).toEqual({ path: elf, compressed: false });
    const xz = await agentXz(found!, work);
    expect(execFileSync('xz', ['-t', xz.hostPath]).length).toBe(0);
    const out = await mkdtemp(join(work, 'unpack-'));
    const exe = await agentExecutable(xz, out);
    expect((await stat(exe.hostPath)).size).toBe(SIZE);
    expect(createHash('sha256').update(await readFile(exe.hostPath)).digest('hex')).toBe(digest);
  });

  it('a corrupt .xz fails with xz\'s reason, and leaves no file behind', async () => {
    const bad = join(work, 'bad.xz');
    execFileSync('sh', ['-c', `xz -0 -c "$1" > "$2.full" && head -c $(($(stat -c %s "$2.full") / 2)) "$2.full" > "$2"`, 'sh', elf, bad]);
    const found = await findAgent({ agent: bad }, 'amd64-usr');
    expect(found?.compressed).toBe(true);
    const out = await mkdtemp(join(work, 'unpack-'));
    await expect(agentExecutable(await hostFile(bad), out)).rejects.toThrow(/^xz failed to unpack the agent: .*(unexpected end|truncated|corrupt)/i);
    await expect(stat(join(out, 'oem-agent'))).rejects.toThrow(/ENOENT/);
  });
});
