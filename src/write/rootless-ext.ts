/**
 * Rootless writes into ext2/3/4: `debugfs -w` on the image file at the partition's offset (no root, no
 * mount). Paths are checked first (every component, with `stat`): a symlink on the way is refused,
 * never followed. File contents are staged in a private temporary directory (bytes written there, a
 * host file linked from there) and copied in with debugfs `write`; owners and modes are set with
 * `set_inode_field`. debugfs exits 0 even when a command fails, so everything it says on stderr beyond
 * its banner is treated as an error.
 */
import { symlink } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { tempDir } from '../cleanup.js';
import { OemError } from '../shared/errors.js';
import { run } from '../tools.js';
import { ancestors, checkHostFile, cleanPath, contentSize, writeNewFile, type HostFile } from '../shared/safe-fs.js';
import { entryPath, type PlanEntry } from './plan.js';
import { noInodes, noSpace, notADirectory, partName, symlinkRefusal, type PartitionSession, type PartitionTarget } from './session.js';

type Kind = 'dir' | 'file' | 'symlink' | 'other' | null;

function q(p: string): string {
  if (/["\\\n\r\0]/.test(p)) throw new OemError(`cannot handle a path with quotes, backslashes or newlines in the rootless backend: ${JSON.stringify(p)}`, { code: 'usage' });
  return `"${p}"`;
}

function sections(out: string): string[] {
  const res: string[] = [];
  for (const line of out.split('\n')) {
    if (line.startsWith('debugfs: ')) res.push('');
    else if (res.length) res[res.length - 1] += line + '\n';
  }
  return res;
}

export class RootlessExtSession implements PartitionSession {
  private readonly device: string;
  private constructor(private readonly target: PartitionTarget) {
    this.device = `${target.imagePath}?offset=${target.offset}`;
  }

  static async open(target: PartitionTarget): Promise<RootlessExtSession> {
    return new RootlessExtSession(target);
  }

  private async debugfs(commands: string[], write: boolean): Promise<{ stdout: string; errors: string[] }> {
    // SOURCE_DATE_EPOCH: the times debugfs gives new inodes and the superblock (reproducible builds).
    const epoch = process.env.SOURCE_DATE_EPOCH;
    const r = await run('debugfs', [write ? '-w' : '-c', '-f', '-', this.device], `${write ? 'write' : 'read'} ${partName(this.target)}`, {
      input: commands.join('\n') + '\n',
      ...(write && epoch && /^\d+$/.test(epoch) ? { env: { E2FSPROGS_FAKE_TIME: epoch } } : {}),
    });
    const errors = r.stderr
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^debugfs \d/.test(l) && !/catastrophic mode/.test(l));
    return { stdout: r.stdout, errors };
  }

  /** The kind of each path (null when absent), with symlink targets. */
  private async kinds(paths: string[]): Promise<Map<string, { kind: Kind; target?: string }>> {
    const out = new Map<string, { kind: Kind; target?: string }>();
    if (!paths.length) return out;
    const { stdout } = await this.debugfs(paths.map((p) => `stat ${q(p)}`), false);
    const secs = sections(stdout);
    paths.forEach((p, i) => {
      const s = secs[i] ?? '';
      const m = /Type: (\w+)/.exec(s);
      if (!m) return out.set(p, { kind: null });
      const t = m[1];
      const kind: Kind = t === 'directory' ? 'dir' : t === 'regular' ? 'file' : t === 'symlink' ? 'symlink' : 'other';
      const link = /Fast link dest: "(.*)"/.exec(s);
      out.set(p, link ? { kind, target: link[1]! } : { kind });
    });
    return out;
  }

  /** Refuses symlinks and non-directories among the parents; returns whether they all exist. */
  private check(path: string, kinds: Map<string, { kind: Kind; target?: string }>): boolean {
    for (const p of ancestors(path)) {
      const k = kinds.get(p);
      if (!k || k.kind === null) return false;
      if (k.kind === 'symlink') throw symlinkRefusal(this.target, path, p, k.target);
      if (k.kind !== 'dir') throw notADirectory(this.target, path, p, k.kind);
    }
    return true;
  }

  async readFile(path: string): Promise<Buffer | null> {
    const p = cleanPath(path);
    const kinds = await this.kinds([...ancestors(p), p]);
    if (!this.check(p, kinds)) return null;
    const k = kinds.get(p)!;
    if (k.kind === 'symlink') throw symlinkRefusal(this.target, p, p, k.target);
    if (k.kind !== 'file') return null;
    const r = await run('debugfs', ['-c', '-R', `cat ${q(p)}`, this.device], `read ${p} from ${partName(this.target)}`, { encoding: 'buffer' } as never);
    return r.stdoutBytes;
  }

  async listDir(path: string): Promise<string[] | null> {
    const p = cleanPath(path);
    if (p !== '/') {
      const kinds = await this.kinds([...ancestors(p), p]);
      if (!this.check(p, kinds)) return null;
      const k = kinds.get(p)!;
      if (k.kind === 'symlink') throw symlinkRefusal(this.target, p, p, k.target);
      if (k.kind !== 'dir') return null;
    }
    const { stdout } = await this.debugfs([`ls -p ${q(p)}`], false);
    return stdout
      .split('\n')
      .map((l) => /^\/\d+\/[0-7]+\/\d+\/\d+\/([^/]*)\/\d*\/$/.exec(l)?.[1])
      .filter((n): n is string => n !== undefined && n !== '.' && n !== '..')
      .sort();
  }

  private async freeSpace(): Promise<{ bytes: number; inodes: number; blockSize: number }> {
    const { stdout } = await this.debugfs(['stats'], false);
    const num = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? NaN);
    const blockSize = num(/^Block size:\s+(\d+)/m);
    const free = num(/^Free blocks:\s+(\d+)/m);
    const reserved = num(/^Reserved block count:\s+(\d+)/m) || 0;
    const inodes = num(/^Free inodes:\s+(\d+)/m);
    // The reserved blocks are for root; files written here belong in the image, so count them free
    // but keep a little slack for directory blocks and extent trees.
    return { bytes: Math.max(0, (free - Math.min(reserved, free)) * blockSize), inodes, blockSize };
  }

  async apply(entries: PlanEntry[]): Promise<void> {
    const all = new Set<string>();
    for (const e of entries) {
      for (const p of ancestors(e.path)) all.add(p);
      all.add(e.path);
    }
    const kinds = await this.kinds([...all]);
    const { bytes: free, inodes, blockSize } = await this.freeSpace();
    let needed = 0;
    for (const e of entries) needed += e.kind === 'file' ? Math.ceil(contentSize(e.content) / blockSize) * blockSize + blockSize : blockSize;
    if (needed > free) throw noSpace(this.target, needed, free);
    if (entries.length > inodes) throw noInodes(this.target, entries.length, inodes);

    const stage = await tempDir('stage');
    const hostFiles: HostFile[] = [];
    try {
      const cmds: string[] = [];
      let n = 0;
      for (const e of entries) {
        const path = entryPath(e.path);
        // Parents are checked against the image as it was, and the plan creates missing ones first.
        for (const p of ancestors(path)) {
          const k = kinds.get(p);
          if (k?.kind === 'symlink') throw symlinkRefusal(this.target, path, p, k.target);
          if (k && k.kind !== null && k.kind !== 'dir') throw notADirectory(this.target, path, p, k.kind);
        }
        const have = kinds.get(path) ?? { kind: null };
        if (have.kind === 'symlink' && e.kind !== 'symlink') throw symlinkRefusal(this.target, path, path, have.target);
        const dir = posix.dirname(path);
        const base = posix.basename(path);
        switch (e.kind) {
          case 'dir':
            if (have.kind === null) cmds.push(`cd ${q(dir)}`, `mkdir ${q(base)}`);
            else if (have.kind !== 'dir') throw notADirectory(this.target, path + '/', path, have.kind);
            else if (e.ensureOnly) continue;
            cmds.push(`sif ${q(path)} mode 0${(0o40000 | e.mode).toString(8)}`);
            break;
          case 'file': {
            if (have.kind === 'dir' || have.kind === 'other') {
              throw new OemError(`cannot write file ${path} in ${partName(this.target)}: a ${have.kind === 'dir' ? 'directory' : 'special file'} is there`, { code: 'badImage' });
            }
            const local = join(stage.path, String(n++));
            if (Buffer.isBuffer(e.content)) await writeNewFile(local, e.content, 0o600);
            else {
              // A host file (the agent, an extension image) is not copied: debugfs reads it through a
              // link under a name it can quote. Its size is checked now and after debugfs has read it.
              await symlink(resolve(e.content.hostPath), local);
              hostFiles.push(e.content);
              await checkHostFile(e.content);
            }
            if (have.kind === 'file') cmds.push(`rm ${q(path)}`);
            cmds.push(`cd ${q(dir)}`, `write ${q(local)} ${q(base)}`, `sif ${q(path)} mode 0${(0o100000 | e.mode).toString(8)}`);
            break;
          }
          case 'symlink':
            if (have.kind === 'dir' || have.kind === 'other') {
              throw new OemError(`cannot create symlink ${path} in ${partName(this.target)}: a ${have.kind === 'dir' ? 'directory' : 'special file'} is there`, { code: 'badImage' });
            }
            if (have.kind === 'symlink') cmds.push(`rm ${q(path)}`);
            cmds.push(`symlink ${q(path)} ${q(e.target)}`);
            break;
        }
        cmds.push(`sif ${q(path)} uid ${e.uid}`, `sif ${q(path)} gid ${e.gid}`);
        kinds.set(path, { kind: e.kind === 'symlink' ? 'symlink' : e.kind });
      }
      const { errors } = await this.debugfs(cmds, true);
      for (const f of hostFiles) await checkHostFile(f);
      if (errors.length) {
        if (errors.some((l) => /no free space|could not allocate|no space left|ran out of/i.test(l))) throw noSpace(this.target, needed, free);
        throw new OemError(`debugfs failed writing ${partName(this.target)}: ${errors[0]}`, { code: 'badImage' });
      }
    } finally {
      await stage.release();
    }
  }

  async close(_commit: boolean): Promise<void> {}
}
