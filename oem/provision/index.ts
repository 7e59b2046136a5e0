/**
 * The provisioning engine of oem-agent: applies a validated AgentConfig to a tree (`/` on first
 * boot), once.
 *
 * Order: storage (a hook), groups, users (with SSH keys), directories, files, links, systemd units,
 * networkd units, then the stamp `<root>/var/lib/oem-agent/provisioned`. With the stamp present a
 * run does nothing (unless forced). Every step compares before it changes anything, so a run that
 * failed half-way (and left no stamp) can simply run again, and a second run changes nothing.
 *
 * The log has one line per action, in the form the journal stores a service's stdout:
 *
 *   oem-agent: created group ops (gid 1500)
 *   oem-agent: wrote /etc/motd (0644 root:root, 6 bytes)
 *   oem-agent: unchanged /etc/hostname (0644 root:root, 5 bytes)
 *   oem-agent: provisioned /: 14 changed, 2 unchanged; stamp /var/lib/oem-agent/provisioned
 *
 * A dry run logs `oem-agent: would create group ops (gid 1500)` and changes nothing.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { describe, OemError } from '../../src/shared/errors.js';
import type { AgentConfig, Owner, Storage } from '../../src/shared/config/types.js';
import { BASE_FORM, LOG_PREFIX, makeContext, requireAccounts, type ProvisionContext, type Verb } from './context.js';
import type { FetchOptions } from './context.js';
import { applyDirectories, applyFiles, applyLinks, DEFAULT_FETCH } from './files.js';
import { RootFs } from '../../src/shared/safe-fs.js';
import { execaRunner, type Runner } from './runner.js';
import { applySystemdUnits, applyNetworkdUnits } from './units.js';
import { applyGroups, applyUsers } from './users.js';

export type { ProvisionContext } from './context.js';
export type { FetchOptions } from './context.js';
export { execaRunner, recordingRunner, type RecordingRunner, type Runner, type RunOptions, type RunResult } from './runner.js';

export type StorageHook = (storage: Storage, ctx: ProvisionContext) => Promise<void>;

export interface ProvisionOptions {
  /** The tree to provision (default '/'). */
  root?: string;
  /** Log what would be done; change nothing, write no stamp. */
  dryRun?: boolean;
  /** One call per line (default: stdout). */
  log?: (line: string) => void;
  /** Where the stamp goes (a host path; default <root>/var/lib/oem-agent). */
  stampDir?: string;
  /** Apply even when the stamp says it was done. */
  force?: boolean;
  /** Applies config.storage (oem/provision/disks.ts); without it, storage is skipped with a warning. */
  storage?: StorageHook;
  /** Runs groupadd, useradd, ... (default: execaRunner). */
  run?: Runner;
  /** Retries and timeouts for file sources (default: 10 tries, 1 s doubling up to 5 s, 60 s per request). */
  fetch?: Partial<FetchOptions>;
}

export interface ProvisionResult {
  /** Whether the config was applied now (false: already provisioned, or a dry run). */
  applied: boolean;
  /** The action lines logged (without the `oem-agent: ` prefix), changed and unchanged. */
  actions: string[];
  /** How many actions changed something (in a dry run: would change). */
  changed: number;
  /** How many found things already as configured. */
  unchanged: number;
}

export const STAMP_NAME = 'provisioned';

/** JSON with object keys sorted, so the hash does not depend on key order. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function configSha256(config: AgentConfig): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex');
}

/** Whether the config names an owner (so it needs the account database). */
function namesOwners(config: AgentConfig): boolean {
  const named = (o: Owner | undefined) => typeof o === 'string' && !/^\d+$/.test(o);
  return [...(config.files ?? []), ...(config.directories ?? []), ...(config.links ?? [])].some((e) => named(e.owner) || named(e.group));
}

interface Stamp {
  /** The stamp's path in the tree, when it is inside the root; else undefined. */
  treePath?: string;
  hostPath: string;
  shown: string;
}

function stampLocation(root: string, stampDir: string | undefined): Stamp {
  const dir = resolve(stampDir ?? join(root, 'var/lib/oem-agent'));
  const rel = relative(root, dir);
  const hostPath = join(dir, STAMP_NAME);
  if (rel === '' || (!rel.startsWith('..') && !isAbsolute(rel))) {
    const treePath = `/${rel ? `${rel.split('\\').join('/')}/` : ''}${STAMP_NAME}`;
    return { treePath, hostPath, shown: root === '/' ? treePath : hostPath };
  }
  return { hostPath, shown: hostPath };
}

async function readStamp(fs: RootFs, stamp: Stamp): Promise<{ exists: boolean; body?: { time?: string; config_sha256?: string } }> {
  let data: Buffer | null;
  if (stamp.treePath !== undefined) {
    const e = await fs.inspect(stamp.treePath);
    if (e === null) return { exists: false };
    data = e.kind === 'file' ? await fs.readFile(stamp.treePath) : null;
  } else {
    try {
      await lstat(stamp.hostPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false };
      throw err;
    }
    data = await readFile(stamp.hostPath).catch(() => null);
  }
  try {
    return { exists: true, body: JSON.parse(data?.toString('utf8') ?? '') as { time?: string; config_sha256?: string } };
  } catch {
    return { exists: true };
  }
}

async function writeStamp(ctx: ProvisionContext, stamp: Stamp, body: string): Promise<void> {
  const data = Buffer.from(body);
  if (stamp.treePath !== undefined) {
    for (const d of await ctx.fs.missingParents(stamp.treePath)) await ctx.fs.mkdir(d, 0o755, 0, 0);
    await ctx.fs.writeFile(stamp.treePath, data, 0o644, 0, 0);
    return;
  }
  const dir = resolve(stamp.hostPath, '..');
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = `${stamp.hostPath}.tmp-${process.pid}`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, stamp.hostPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Applies `config` to the tree at `opts.root`; see the module comment. */
export async function provision(config: AgentConfig, opts: ProvisionOptions = {}): Promise<ProvisionResult> {
  const root = resolve(opts.root ?? '/');
  const dryRun = opts.dryRun ?? false;
  const out = opts.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const say = (message: string) => out(`${LOG_PREFIX}${message}`);
  const fs = new RootFs(root);
  await fs.checkRoot();
  const sha = configSha256(config);
  const stamp = stampLocation(root, opts.stampDir);

  const before = await readStamp(fs, stamp);
  if (before.exists && !opts.force) {
    const when = before.body?.time ? ` at ${before.body.time}` : '';
    say(`already provisioned${when} (stamp ${stamp.shown}); nothing to do`);
    if (before.body?.config_sha256 && before.body.config_sha256 !== sha) {
      say(`the config changed since (sha256 ${sha.slice(0, 12)}, was ${before.body.config_sha256.slice(0, 12)}); it is not applied without force`);
    }
    return { applied: false, actions: [], changed: 0, unchanged: 0 };
  }

  const actions: string[] = [];
  let changed = 0;
  let unchanged = 0;
  const ctx = makeContext({
    root,
    fs,
    dryRun,
    run: opts.run ?? execaRunner,
    fetch: { ...DEFAULT_FETCH, ...opts.fetch },
    note: say,
    changed(verb: Verb, what: string) {
      const line = dryRun ? `would ${BASE_FORM[verb]} ${what}` : `${verb} ${what}`;
      actions.push(line);
      changed++;
      say(line);
    },
    unchanged(what: string) {
      const line = `unchanged ${what}`;
      actions.push(line);
      unchanged++;
      say(line);
    },
  });

  say(`${dryRun ? 'dry run: would provision' : 'provisioning'} ${root} (config sha256 ${sha.slice(0, 12)}${opts.force && before.exists ? ', forced' : ''})`);
  try {
    // Checked before anything changes: users, groups and owner names need the account database.
    if ((config.users?.length ?? 0) > 0 || (config.groups?.length ?? 0) > 0 || namesOwners(config)) {
      requireAccounts(ctx, await ctx.accounts(), 'provision users, groups and owners');
    }
    if (config.storage !== undefined) {
      if (opts.storage) await opts.storage(config.storage, ctx);
      else say('warning: the config has storage, but this agent has no storage handler; storage is skipped');
    }
    if (config.groups?.length) await applyGroups(ctx, config.groups);
    if (config.users?.length) await applyUsers(ctx, config.users);
    if (config.directories?.length) await applyDirectories(ctx, config.directories);
    if (config.files?.length) await applyFiles(ctx, config.files);
    if (config.links?.length) await applyLinks(ctx, config.links);
    if (config.systemd?.units?.length) await applySystemdUnits(ctx, config.systemd.units);
    if (config.networkd?.units?.length) await applyNetworkdUnits(ctx, config.networkd.units);
    if (!dryRun) {
      const body = JSON.stringify({ time: new Date().toISOString(), config_sha256: sha, changed, unchanged }, null, 2) + '\n';
      await writeStamp(ctx, stamp, body);
    }
  } catch (err) {
    say(`failed${dryRun ? ' (dry run)' : ''} after ${changed} changed, ${unchanged} unchanged: ${describe(err)}`);
    if (err instanceof OemError) throw err;
    throw new OemError(`provisioning ${root} failed: ${describe(err)}`, { cause: err });
  }
  if (dryRun) say(`dry run done: ${changed} would change, ${unchanged} unchanged; nothing was written`);
  else say(`provisioned ${root}: ${changed} changed, ${unchanged} unchanged; stamp ${stamp.shown}`);
  return { applied: !dryRun, actions, changed, unchanged };
}
