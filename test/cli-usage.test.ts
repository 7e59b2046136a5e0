/**
 * Usage errors of every kind end as the README's Commands section says: one line naming what is
 * wrong (oclif's multi-line parse errors included), a hint, exit 2; `oem help COMMAND` is help.
 */
import { execa } from 'execa';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { expectCleanError, oem } from './helpers/cli.js';
import { usageLine } from '../src/base-command.js';

/** This test file: a path that is a file, not a directory. */
const THIS = fileURLToPath(import.meta.url);
const RE_THIS = THIS.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('usage errors', () => {
  const cases: [string, string[], RegExp][] = [
    ['a missing required flag', ['inject-key', 'image.bin', '--output', 'x.bin'], /^Missing required flag key$/],
    ['flags that exclude each other', ['build', '--provider', 'ec2', '--all-providers'], /^--provider=ec2 cannot also be provided when using --all-providers$/],
    ['a missing argument, named', ['inspect'], /^Missing 1 required arg: image \(raw or compressed disk image\)$/],
    ['an unknown command', ['nosuchcmd'], /^unknown command "nosuchcmd"$/],
    ['an unknown command of two words', ['nosuch', 'thing'], /^unknown command "nosuch thing"$/],
    ['a config file that does not exist', ['validate', 'no-such-config.yml'], /^no such config file: no-such-config\.yml$/],
    ['inject-key --in-place with --output', ['inject-key', 'image.bin', '--key', 'k.pub', '--in-place', '--output', 'y.bin'], /^--output=y\.bin cannot also be provided when using --in-place$/],
    ['an --output-dir under a file', ['build', '--provider', 'qemu', '--base-url', 'http://127.0.0.1:1/{channel}/{board}', '--output-dir', `${THIS}/out`], new RegExp(`^--output-dir ${RE_THIS}/out: ${RE_THIS} is not a directory$`)],
    ['--agent with --no-agent', ['build', '--provider', 'ec2', '--agent', 'a', '--no-agent'], /^--agent=a cannot also be provided when using --no-agent$/],
    // Before any request: nothing listens on port 1, and a download would retry for about 25 s.
    ['a --key file that does not exist', ['fetch', '--base-url', 'http://127.0.0.1:1/{channel}/{board}', '--key', 'no-such-key.asc'], /^cannot read key file no-such-key\.asc: /],
  ];
  for (const [name, args, re] of cases) {
    it(name, async () => {
      const r = await oem(args);
      expect(r.exitCode).toBe(2);
      expect(expectCleanError(r)).toMatch(re);
      expect(r.stderr).toMatch(/^hint: /m);
    });
  }

  it('oem help COMMAND shows the command\'s help, as --help does', async () => {
    const help = await oem(['help', 'build']);
    expect(help.exitCode).toBe(0);
    const flag = await oem(['build', '--help']);
    expect(help.stdout).toBe(flag.stdout);
    expect(help.stdout).toMatch(/^USAGE$/m);
  });

  it('usageLine: one line from each of oclif\'s message shapes', () => {
    expect(usageLine('The following errors occurred:\n  Missing required flag a\n  Missing required flag b\nSee more help with --help')).toBe('Missing required flag a; Missing required flag b');
    expect(usageLine('Missing 2 required args:\nimage  the image\nkey    the key\nSee more help with --help')).toBe('Missing 2 required args: image (the image); key (the key)');
    expect(usageLine('Flag --user expects a value')).toBe('Flag --user expects a value');
  });
});

describe('downloads that cannot succeed end at once', () => {
  it('a port fetch refuses (a "bad port" of the Fetch standard): one attempt, exit 5', async () => {
    const r = await oem(['fetch', '--base-url', 'http://127.0.0.1:9/{channel}/{board}']);
    expect(r.exitCode).toBe(5);
    expect(expectCleanError(r)).toMatch(/^cannot fetch http:\/\/127\.0\.0\.1:9\/stable\/amd64-usr\/current\/version\.txt: fetch refuses its port/);
    expect(r.stderr).not.toMatch(/retry/i);
  });
});

describe('oem verify: a file named as evidence is read or refused, never skipped', () => {
  it('FILE.DIGESTS that is a directory, a dangling symlink or a FIFO; FILE itself a directory', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oem-verify-usage-'));
    const file = join(dir, 'release.bin');
    await writeFile(file, 'data');
    await writeFile(`${file}.sig`, 'not a signature');
    const r0 = await oem(['verify', dir]);
    expect(r0.exitCode).toBe(2);
    expect(expectCleanError(r0)).toBe(`not a regular file: ${dir}`);
    const digests = `${file}.DIGESTS`;
    const cases: [string, () => Promise<unknown>, string][] = [
      ['a directory', () => mkdir(digests), `the digests ${digests} is not a regular file`],
      ['a dangling symlink', () => symlink(join(dir, 'nothing'), digests), `cannot read the digests ${digests}: a symlink to nothing`],
      ['a FIFO', () => execa('mkfifo', [digests]), `the digests ${digests} is not a regular file`],
    ];
    for (const [what, make, line] of cases) {
      await rm(digests, { recursive: true, force: true });
      await make();
      // Read (or refused) before the signature, which here is garbage.
      const r = await oem(['verify', file]);
      expect(r.exitCode, what).toBe(4);
      expect(expectCleanError(r), what).toBe(line);
    }
    await rm(dir, { recursive: true, force: true });
  });
});
