/**
 * Directories, files and links, and the idempotent operations the other steps build on: each one
 * compares what is there with what is wanted, changes only what differs, and logs one line
 * (`created directory`, `wrote`, `linked`, `updated ...`, or `unchanged ...`).
 *
 * Missing parent directories are created as root:root 0755. Files are written atomically (temporary
 * file, owner, mode, fsync, rename) with exactly the owner and mode asked for. Remote sources are
 * fetched with retries and their SHA-512 checked before anything is written.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { OemError } from '../../src/shared/errors.js';
import { describeFetchError, retryableStatus, RetriesExhausted, statusText, withRetries } from '../../src/shared/retry.js';
import type { DirectoryEntry, FileEntry, LinkEntry } from '../../src/shared/config/types.js';
import { fmtMode, fmtOwner, parseMode, resolveOwner, type FetchOptions, type Id, type ProvisionContext } from './context.js';
import { cleanPath, DEFAULT_READ_LIMIT, kindName } from '../../src/shared/safe-fs.js';


export const DEFAULT_FETCH: FetchOptions = { tries: 10, initialDelayMs: 1000, maxDelayMs: 5000, timeoutMs: 60_000 };

const sameId = (have: number, want: Id) => want.id !== undefined && have === want.id;

/** Creates the missing ancestors of `path` as root:root 0755. */
export async function ensureParents(ctx: ProvisionContext, path: string): Promise<void> {
  for (const d of await ctx.fs.missingParents(path, ctx.virtualDirs)) {
    if (ctx.dryRun) ctx.virtualDirs.add(d);
    else await ctx.fs.mkdir(d, 0o755, 0, 0);
    ctx.changed('created', `directory ${d} (0755 root:root)`);
  }
}

export interface DirSpec {
  mode: number;
  uid: Id;
  gid: Id;
  /** Only create it when missing; an existing directory keeps its owner and mode. */
  onlyIfMissing?: boolean;
}

/** Makes `path` a directory with this owner and mode (parents root:root 0755). */
export async function ensureDirectory(ctx: ProvisionContext, path: string, spec: DirSpec): Promise<void> {
  const p = cleanPath(path);
  await ensureParents(ctx, p);
  const desc = `${fmtMode(spec.mode)} ${fmtOwner(spec.uid, spec.gid)}`;
  const have = await ctx.fs.inspect(p, ctx.virtualDirs);
  if (have === null) {
    if (ctx.dryRun) ctx.virtualDirs.add(p);
    else await ctx.fs.mkdir(p, spec.mode, need(spec.uid, p), need(spec.gid, p));
    ctx.changed('created', `directory ${p} (${desc})`);
    return;
  }
  if (have.kind === 'symlink') {
    throw new OemError(`refusing to use ${ctx.fs.show(p)} as a directory: it is a symlink (-> ${have.target ?? '?'}); symlinks are never followed when writing`);
  }
  if (have.kind !== 'dir') throw new OemError(`cannot create the directory ${ctx.fs.show(p)}: a ${kindName(have.kind)} is there`);
  if (spec.onlyIfMissing || (have.mode === spec.mode && sameId(have.uid, spec.uid) && sameId(have.gid, spec.gid))) {
    ctx.unchanged(`directory ${p} (${spec.onlyIfMissing ? 'exists' : desc})`);
    return;
  }
  if (!ctx.dryRun) await ctx.fs.setOwnerMode(p, need(spec.uid, p), need(spec.gid, p), spec.mode);
  ctx.changed('updated', `directory ${p} (${desc}, was ${fmtMode(have.mode)} ${have.uid}:${have.gid})`);
}

function need(id: Id, forPath: string): number {
  if (id.id === undefined) throw new OemError(`internal: no id for ${id.name} (${forPath})`);
  return id.id;
}

export interface FileSpec {
  mode: number;
  uid: Id;
  gid: Id;
  /** Replace an existing file (default true). */
  overwrite?: boolean;
  /** Shown in the log instead of the byte count, e.g. "2 keys". */
  detail?: string;
}

/** The content of a file: bytes, or a remote source fetched only when the file is not already it. */
export type FileContent = { data: Buffer } | { url: string; sha512: string };

/** Makes `path` a regular file with this content, owner and mode. */
export async function ensureFile(ctx: ProvisionContext, path: string, content: FileContent, spec: FileSpec): Promise<void> {
  const p = cleanPath(path);
  // What is there decides whether to fetch; parents are created only once the content is at hand.
  const have = await ctx.fs.inspect(p, ctx.virtualDirs);
  const size = 'data' in content ? `${content.data.length} bytes` : undefined;
  const desc = (bytes?: string) => `${fmtMode(spec.mode)} ${fmtOwner(spec.uid, spec.gid)}${spec.detail ? `, ${spec.detail}` : bytes ? `, ${bytes}` : ''}`;
  if (have && (have.kind === 'dir' || have.kind === 'other')) {
    throw new OemError(`cannot write the file ${ctx.fs.show(p)}: a ${kindName(have.kind)} is there`);
  }
  const exists = have !== null || ctx.virtualFiles.has(p);
  if (exists && spec.overwrite === false) {
    ctx.unchanged(`${p} (exists; overwrite is false)`);
    return;
  }
  if (have && have.kind === 'file') {
    // A file of another size (or too big to compare in memory) is simply different.
    const comparable = 'data' in content ? have.size === content.data.length : have.size <= DEFAULT_READ_LIMIT;
    const current = comparable ? await ctx.fs.readFile(p) : null;
    const same =
      current !== null &&
      ('data' in content ? current.equals(content.data) : sha512Hex(current) === normalizeSha512(content.sha512, p));
    if (same) {
      const bytes = `${current.length} bytes`;
      if (have.mode === spec.mode && sameId(have.uid, spec.uid) && sameId(have.gid, spec.gid)) {
        ctx.unchanged(`${p} (${desc(bytes)})`);
        return;
      }
      if (!ctx.dryRun) await ctx.fs.setOwnerMode(p, need(spec.uid, p), need(spec.gid, p), spec.mode);
      ctx.changed('updated', `owner and mode of ${p} (${desc(bytes)}, was ${fmtMode(have.mode)} ${have.uid}:${have.gid})`);
      return;
    }
  }
  const verb = have?.kind === 'symlink' ? 'replaced' : 'wrote';
  const what = (bytes?: string) => (verb === 'replaced' ? `the symlink ${p} (-> ${have?.target ?? '?'}) with a file (${desc(bytes)})` : `${p} (${desc(bytes)})`);
  if (ctx.dryRun) {
    await ensureParents(ctx, p);
    ctx.virtualFiles.add(p);
    ctx.changed(verb, what(size ?? `from ${showUrl('url' in content ? content.url : '')}`));
    return;
  }
  const data = 'data' in content ? content.data : await fetchVerified(ctx, content.url, content.sha512, p);
  await ensureParents(ctx, p);
  await ctx.fs.writeFile(p, data, spec.mode, need(spec.uid, p), need(spec.gid, p));
  ctx.changed(verb, what(`${data.length} bytes`));
}

export interface LinkSpec {
  uid: Id;
  gid: Id;
  /** Replace a regular file at the path (masking a unit); otherwise that is an error. */
  replaceFile?: boolean;
}

/** Makes `path` a symlink to `target` (the target is stored as given, never resolved). */
export async function ensureSymlink(ctx: ProvisionContext, path: string, target: string, spec: LinkSpec): Promise<void> {
  const p = cleanPath(path);
  await ensureParents(ctx, p);
  const have = await ctx.fs.inspect(p, ctx.virtualDirs);
  const what = `${p} -> ${target}`;
  if (have && have.kind === 'symlink' && have.target === target) {
    if (sameId(have.uid, spec.uid) && sameId(have.gid, spec.gid)) {
      ctx.unchanged(`symlink ${what}`);
      return;
    }
    if (!ctx.dryRun) await ctx.fs.lchown(p, need(spec.uid, p), need(spec.gid, p));
    ctx.changed('updated', `owner of the symlink ${what} (${fmtOwner(spec.uid, spec.gid)})`);
    return;
  }
  if (have && (have.kind === 'dir' || have.kind === 'other' || (have.kind === 'file' && !spec.replaceFile))) {
    throw new OemError(`cannot create the symlink ${ctx.fs.show(p)}: a ${kindName(have.kind)} is there`);
  }
  if (!ctx.dryRun) await ctx.fs.symlink(p, target, need(spec.uid, p), need(spec.gid, p));
  if (have) ctx.changed('replaced', `the ${kindName(have.kind)} ${p}${have.target ? ` (-> ${have.target})` : ''} with a symlink -> ${target}`);
  else ctx.changed('linked', what);
}

/** Makes `path` a hard link to the regular file `target` (inside the tree; relative to the link's directory). */
export async function ensureHardlink(ctx: ProvisionContext, path: string, target: string, owner?: { uid: Id; gid: Id }): Promise<void> {
  const p = cleanPath(path);
  const t = cleanPath(target.startsWith('/') ? target : posix.join(posix.dirname(p), target));
  await ensureParents(ctx, p);
  const src = await ctx.fs.inspect(t, ctx.virtualDirs);
  const what = `${p} => ${t} (hard link)`;
  if (src === null && ctx.dryRun && ctx.virtualFiles.has(t)) {
    ctx.virtualFiles.add(p);
    ctx.changed('linked', what);
    return;
  }
  if (src === null) throw new OemError(`cannot create the hard link ${p}: its target ${ctx.fs.show(t)} does not exist`);
  if (src.kind !== 'file') throw new OemError(`cannot create the hard link ${p}: its target ${ctx.fs.show(t)} is a ${kindName(src.kind)}, not a regular file`);
  const have = await ctx.fs.inspect(p, ctx.virtualDirs);
  if (have && have.kind === 'file' && have.ino === src.ino && have.dev === src.dev) {
    ctx.unchanged(what);
  } else {
    if (have && (have.kind === 'dir' || have.kind === 'other')) throw new OemError(`cannot create the hard link ${ctx.fs.show(p)}: a ${kindName(have.kind)} is there`);
    if (!ctx.dryRun) await ctx.fs.hardlink(p, t);
    ctx.changed(have ? 'replaced' : 'linked', have ? `the ${kindName(have.kind)} ${p} with a hard link to ${t}` : what);
  }
  if (owner && !(sameId(src.uid, owner.uid) && sameId(src.gid, owner.gid))) {
    // A hard link has no owner of its own: this is the owner of the file both names share.
    if (!ctx.dryRun) await ctx.fs.setOwnerMode(p, need(owner.uid, p), need(owner.gid, p), src.mode);
    ctx.changed('updated', `owner of ${p} (${fmtOwner(owner.uid, owner.gid)}, shared with ${t})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Remote sources.

export function sha512Hex(data: Buffer): string {
  return createHash('sha512').update(data).digest('hex');
}

/** Accepts hex, optionally prefixed `sha512-` or `sha512:`; returns lowercase hex. */
export function normalizeSha512(sum: string | undefined, forPath: string): string {
  const m = /^(?:sha512[-:])?([0-9a-fA-F]{128})$/.exec(sum ?? '');
  if (!m) throw new OemError(`invalid sha512 for ${forPath}: give the 128 hex digits of the SHA-512 of the content`, { code: 'usage' });
  return m[1]!.toLowerCase();
}

/** A URL for the log, without credentials. */
export function showUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * Fetches `url` (http or https) and checks its SHA-512. Network errors, timeouts, 408, 429 and 5xx
 * are retried (waits doubling from initialDelayMs up to maxDelayMs, `tries` attempts in all);
 * other statuses and a checksum mismatch fail at once.
 */
export async function fetchVerified(ctx: Pick<ProvisionContext, 'fetch' | 'note'>, url: string, sha512: string, forPath: string): Promise<Buffer> {
  const want = normalizeSha512(sha512, forPath);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new OemError(`invalid source URL for ${forPath}: ${JSON.stringify(url)}`, { code: 'usage' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new OemError(`unsupported source URL for ${forPath}: ${showUrl(url)} (only http and https)`, { code: 'usage' });
  const opts = ctx.fetch;
  const shown = showUrl(url);
  const attempt = async (): Promise<Buffer> => {
    const res = await fetch(url, { signal: AbortSignal.timeout(opts.timeoutMs), redirect: 'follow' });
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      if (retryableStatus(res.status)) throw new Error(statusText(res));
      throw failed(statusText(res));
    }
    const data = Buffer.from(await res.arrayBuffer());
    const got = sha512Hex(data);
    if (got !== want) throw failed(`sha512 mismatch: expected ${want.slice(0, 16)}…, got ${got.slice(0, 16)}… (${data.length} bytes)`);
    ctx.note(`fetched ${shown} (${data.length} bytes, sha512 ok)`);
    return data;
  };
  const failed = (why: string) => new OemError(`cannot fetch ${shown} for ${forPath}: ${why}`, { code: 'network' });
  try {
    return await withRetries({ tries: opts.tries, initialDelayMs: opts.initialDelayMs, maxDelayMs: opts.maxDelayMs }, attempt, (n, err, delay) =>
      ctx.note(`fetching ${shown} failed (attempt ${n}/${opts.tries}): ${describeFetchError(err, opts.timeoutMs)}; retrying in ${delay / 1000}s`),
    );
  } catch (err) {
    if (!(err instanceof RetriesExhausted)) throw err;
    throw failed(`${describeFetchError(err.last, opts.timeoutMs)} (${err.attempts} attempts)`);
  }
}


// ---------------------------------------------------------------------------------------------
// The steps.

export async function applyDirectories(ctx: ProvisionContext, dirs: DirectoryEntry[]): Promise<void> {
  for (const d of dirs) {
    const p = cleanPath(d.path);
    const mode = parseMode(d.mode, 0o755, p);
    await ensureDirectory(ctx, p, { mode, uid: await resolveOwner(ctx, d.owner, 'user', p), gid: await resolveOwner(ctx, d.group, 'group', p) });
  }
}

export function fileContent(f: FileEntry, p: string): FileContent {
  const given = [f.content !== undefined, f.content_base64 !== undefined, f.source !== undefined].filter(Boolean).length;
  if (given !== 1) throw new OemError(`${p}: give exactly one of content, content_base64 and source`, { code: 'usage' });
  if (f.content !== undefined) return { data: Buffer.from(f.content, 'utf8') };
  if (f.content_base64 !== undefined) {
    const b64 = f.content_base64.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) throw new OemError(`${p}: content_base64 is not valid base64`, { code: 'usage' });
    return { data: Buffer.from(b64, 'base64') };
  }
  if (f.sha512 === undefined) throw new OemError(`${p}: a source needs its sha512`, { code: 'usage' });
  normalizeSha512(f.sha512, p);
  return { url: f.source!, sha512: f.sha512 };
}

export async function applyFiles(ctx: ProvisionContext, files: FileEntry[]): Promise<void> {
  for (const f of files) {
    const p = cleanPath(f.path);
    const content = fileContent(f, p);
    const mode = parseMode(f.mode, 0o644, p);
    await ensureFile(ctx, p, content, {
      mode,
      uid: await resolveOwner(ctx, f.owner, 'user', p),
      gid: await resolveOwner(ctx, f.group, 'group', p),
      overwrite: f.overwrite ?? true,
    });
  }
}

export async function applyLinks(ctx: ProvisionContext, links: LinkEntry[]): Promise<void> {
  for (const l of links) {
    const p = cleanPath(l.path);
    if (typeof l.target !== 'string' || l.target === '') throw new OemError(`${p}: a link needs a target`, { code: 'usage' });
    const uid = await resolveOwner(ctx, l.owner, 'user', p);
    const gid = await resolveOwner(ctx, l.group, 'group', p);
    if (l.hard) await ensureHardlink(ctx, p, l.target, l.owner !== undefined || l.group !== undefined ? { uid, gid } : undefined);
    else await ensureSymlink(ctx, p, l.target, { uid, gid });
  }
}
