/**
 * What the agent does with a platform's metadata, one action per subcommand (see oem/cli.ts):
 *
 *   metadata   /run/coreos/metadata: KEY=VALUE lines (values-checked), 0644
 *   ssh-keys   ~core/.ssh/authorized_keys.d/coreos-metadata, merged into ~core/.ssh/authorized_keys
 *              the update-ssh-keys way (other key sets kept), owned by the user, 0700 dirs, 0600 files
 *   hostname   /etc/hostname (nothing when the platform gives none)
 *   network    networkd units in /etc/systemd/network (0644); gce: `169.254.169.254 metadata` in /etc/hosts
 *   userdata   an agent config (`version: 1`) is validated and applied once (its own stamp);
 *              `#cloud-config` goes to coreos-cloudinit; anything else is saved
 *
 * Every write goes through RootFs (oem/provision/rootfs.ts): atomic, never through a symlink, never
 * outside the root, and only when something differs (the log says `unchanged` otherwise). Everything
 * from the platform is checked again here (values.ts), whatever the provider module did.
 */
import { posix } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { isMap, parseDocument } from 'yaml';
import { OemError } from '../../src/shared/errors.js';
import { parseAuthorizedKeys, validKeySetName } from '../../src/shared/ssh-keys.js';
import { formatProblem } from '../../src/shared/config/types.js';
import { validateConfig } from '../../src/shared/config/validate.js';
import { LOG_PREFIX, makeContext, ROOT_ID, type Id, type ProvisionContext, type Verb } from '../provision/context.js';
import { DEFAULT_FETCH, ensureFile } from '../provision/files.js';
import { execaRunner, provision, type ProvisionOptions, type Runner } from '../provision/index.js';
import { runChecked } from '../provision/runner.js';
import { writeKeySet } from '../provision/users.js';
import { cleanPath, RootFs } from '../../src/shared/safe-fs.js';
import { agentPlatform } from '../../src/shared/platforms.js';
import { MAX_USERDATA_BYTES } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys, envFileContent, shown, staticHostname, validNetworkUnitName } from './values.js';

export const METADATA_FILE = '/run/coreos/metadata';
/** The key set the ssh-keys action writes (as coreos-metadata did). */
export const SSH_KEY_SET = 'coreos-metadata';
export const DEFAULT_USER = 'core';
export const NETWORK_DIR = '/etc/systemd/network';
export const USERDATA_RAW = '/var/lib/oem-agent/userdata.raw';
/** The stamp directory for an agent config from userdata, inside the root. */
export const USERDATA_STAMP_DIR = '/var/lib/oem-agent/userdata';
export const COREOS_CLOUDINIT = '/usr/bin/coreos-cloudinit';
/** /etc/hosts lines a platform needs (by provider id). */
export const HOSTS_ENTRIES: Record<string, { address: string; name: string }[]> = {
  gce: [{ address: '169.254.169.254', name: 'metadata' }],
};

export interface ActionOptions {
  provider: MetadataProvider;
  env: ProviderEnv;
}

/** The writing context of the provisioning engine, for the helpers of oem/provision/files.ts. */
export function writeContext(root: string, log: (line: string) => void, run: Runner = execaRunner): ProvisionContext {
  return makeContext({
    root,
    fs: new RootFs(root),
    dryRun: false,
    run,
    fetch: { ...DEFAULT_FETCH },
    note: log,
    changed: (verb: Verb, what: string) => log(`${verb} ${what}`),
    unchanged: (what: string) => log(`unchanged ${what}`),
  });
}

async function context(env: ProviderEnv, run?: Runner): Promise<ProvisionContext> {
  const ctx = writeContext(env.root, env.log, run);
  await ctx.fs.checkRoot();
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// metadata

/** Writes the attributes as an environment file at `path` (a path in the tree; default /run/coreos/metadata). */
export async function writeAttributes(ctx: ProvisionContext, attributes: Record<string, string>, path = METADATA_FILE): Promise<string[]> {
  const p = cleanPath(path);
  const { content, written } = envFileContent(attributes, ctx.note);
  await ensureFile(ctx, p, { data: Buffer.from(content, 'utf8') }, { mode: 0o644, uid: ROOT_ID, gid: ROOT_ID, detail: `${written.length} attribute${written.length === 1 ? '' : 's'}` });
  return written;
}

/** How attribute names are written: Container Linux's COREOS_* or Afterburn's AFTERBURN_*. */
export const ATTRIBUTE_FORMATS = ['coreos', 'afterburn'] as const;
export type AttributeFormat = (typeof ATTRIBUTE_FORMATS)[number];
/** Where Afterburn writes its attributes (Fedora CoreOS' afterburn.service). */
export const AFTERBURN_METADATA_FILE = '/run/metadata/afterburn';

/**
 * The attributes under Afterburn's names: COREOS_<name>_X becomes AFTERBURN_<afterburn>_X (for ec2
 * COREOS_EC2_IPV4_LOCAL becomes AFTERBURN_AWS_IPV4_LOCAL). Container Linux's platform-neutral names
 * (COREOS_IPV4_PUBLIC, COREOS_HOSTNAME, ...) have no Afterburn counterpart and are left out.
 */
export function afterburnAttributes(platform: string, attributes: Record<string, string>): Record<string, string> {
  const info = agentPlatform(platform);
  if (info === undefined) throw new OemError(`internal: no attribute names for the platform ${shown(platform)}`);
  const from = `COREOS_${info.name}_`;
  const to = `AFTERBURN_${info.afterburn ?? info.name}_`;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(attributes)) if (k.startsWith(from)) out[to + k.slice(from.length)] = v;
  return out;
}

export async function metadataAction(o: ActionOptions & { attributesFile?: string; format?: AttributeFormat }): Promise<void> {
  const ctx = await context(o.env);
  const md = await o.provider.metadata(o.env);
  if (o.format === 'afterburn') {
    await writeAttributes(ctx, afterburnAttributes(o.provider.id, md.attributes), o.attributesFile ?? AFTERBURN_METADATA_FILE);
  } else {
    await writeAttributes(ctx, md.attributes, o.attributesFile ?? METADATA_FILE);
  }
}

// ---------------------------------------------------------------------------------------------
// check-in

/** Tells the platform the machine booted, where it expects that; a log line where it does not. */
export async function checkInAction(o: ActionOptions): Promise<void> {
  if (o.provider.checkIn === undefined) {
    o.env.log(`${o.provider.id}: the platform expects no boot check-in; nothing to do`);
    return;
  }
  await o.provider.checkIn(o.env);
  o.env.log(`${o.provider.id}: checked in`);
}

// ---------------------------------------------------------------------------------------------
// ssh-keys

const USER_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;

/**
 * Writes `keys` as the key set `setName` of `user` and regenerates the user's authorized_keys from
 * all of the user's key sets (an authorized_keys without key sets is first kept as the set
 * old_authorized_keys, as update-ssh-keys does). Invalid keys are dropped with a log line.
 */
export async function writeSshKeys(ctx: ProvisionContext, keys: string[], user = DEFAULT_USER, setName = SSH_KEY_SET): Promise<number> {
  if (!USER_NAME.test(user)) throw new OemError(`invalid user name ${shown(user)}`, { code: 'usage' });
  if (!validKeySetName(setName)) throw new OemError(`invalid key set name ${shown(setName)}`, { code: 'usage' });
  const valid = cleanSshKeys(keys, ctx.note, 'the metadata');
  const parsed = valid.length ? parseAuthorizedKeys(valid.join('\n'), 'the metadata keys') : [];
  const acc = await ctx.accounts();
  const entry = acc.user(user);
  if (!entry) {
    const why = acc.present.passwd ? 'no such user in' : 'there is no';
    throw new OemError(`cannot write SSH keys for ${user}: ${why} ${ctx.fs.show('/etc/passwd')}`);
  }
  if (!entry.home.startsWith('/') || posix.normalize(entry.home) === '/') {
    throw new OemError(`cannot write SSH keys for ${user}: the home directory ${shown(entry.home)} is not usable`);
  }
  const home = posix.normalize(entry.home);
  const uid: Id = { id: entry.uid, name: user };
  const gid: Id = { id: entry.gid, name: acc.groupById(entry.gid)?.name ?? String(entry.gid) };
  await writeKeySet(ctx, home, uid, gid, setName, parsed);
  return parsed.length;
}

export async function sshKeysAction(o: ActionOptions & { user?: string }): Promise<void> {
  const ctx = await context(o.env);
  const md = await o.provider.metadata(o.env);
  if (md.sshKeys.length === 0) ctx.note(`${o.provider.id}: no SSH keys in the metadata`);
  await writeSshKeys(ctx, md.sshKeys, o.user ?? DEFAULT_USER);
}

// ---------------------------------------------------------------------------------------------
// hostname

/** Writes /etc/hostname when `hostname` is valid; returns what was written (undefined: nothing). */
export async function writeHostname(ctx: ProvisionContext, hostname: string | undefined): Promise<string | undefined> {
  const name = cleanHostname(hostname, ctx.note);
  if (name === undefined) {
    ctx.note(`no ${hostname === undefined ? '' : 'valid '}hostname in the metadata; /etc/hostname is left as it is`);
    return undefined;
  }
  const h = staticHostname(name);
  if (h !== name) ctx.note(`the hostname ${name} is longer than 64 characters; using its first label ${h}`);
  await ensureFile(ctx, '/etc/hostname', { data: Buffer.from(`${h}\n`) }, { mode: 0o644, uid: ROOT_ID, gid: ROOT_ID });
  return h;
}

export async function hostnameAction(o: ActionOptions): Promise<void> {
  const ctx = await context(o.env);
  const md = await o.provider.metadata(o.env);
  await writeHostname(ctx, md.hostname);
}

// ---------------------------------------------------------------------------------------------
// network

/** Writes the networkd units (names and content checked); returns the names written. */
export async function writeNetworkUnits(ctx: ProvisionContext, units: Metadata['networkUnits']): Promise<string[]> {
  const names: string[] = [];
  const seen = new Set<string>();
  for (const u of units) {
    if (!validNetworkUnitName(u.name) || seen.has(u.name)) {
      ctx.note(`refusing the networkd unit name ${shown(u.name)}: not a plain .network/.netdev/.link file name${seen.has(u.name) ? ' (twice)' : ''}`);
      continue;
    }
    if (typeof u.content !== 'string' || u.content.includes('\0')) {
      ctx.note(`refusing the networkd unit ${u.name}: its content is not text`);
      continue;
    }
    seen.add(u.name);
    await ensureFile(ctx, `${NETWORK_DIR}/${u.name}`, { data: Buffer.from(u.content, 'utf8') }, { mode: 0o644, uid: ROOT_ID, gid: ROOT_ID });
    names.push(u.name);
  }
  return names;
}

/** Adds `address name` to /etc/hosts unless a line already maps the address to the name. */
export async function ensureHostsEntry(ctx: ProvisionContext, address: string, name: string): Promise<void> {
  const path = '/etc/hosts';
  const have = await ctx.fs.inspect(path);
  // Flatcar's /etc/hosts may be a link into /usr; it is read the way the system would, and replaced by a file.
  const current = (await ctx.fs.readFileFollow(path))?.toString('utf8') ?? '';
  const present = current.split('\n').some((line) => {
    const fields = line.replace(/#.*/, '').trim().split(/\s+/);
    return fields[0] === address && fields.slice(1).includes(name);
  });
  const mode = have?.kind === 'file' ? have.mode : 0o644;
  const idOf = (id: number | undefined): Id => (id === undefined || id === 0 ? ROOT_ID : { id, name: String(id) });
  const owner = idOf(have?.kind === 'file' ? have.uid : undefined);
  const group = idOf(have?.kind === 'file' ? have.gid : undefined);
  if (present) {
    ctx.unchanged(`/etc/hosts (has ${address} ${name})`);
    return;
  }
  const body = current === '' || current.endsWith('\n') ? current : `${current}\n`;
  await ensureFile(ctx, path, { data: Buffer.from(`${body}${address} ${name}\n`) }, { mode, uid: owner, gid: group });
}

export async function networkAction(o: ActionOptions): Promise<void> {
  const ctx = await context(o.env);
  const md = await o.provider.metadata(o.env);
  if (md.networkUnits.length === 0) ctx.note(`${o.provider.id}: no network configuration in the metadata (DHCP configures the network)`);
  else await writeNetworkUnits(ctx, md.networkUnits);
  for (const e of HOSTS_ENTRIES[o.provider.id] ?? []) await ensureHostsEntry(ctx, e.address, e.name);
}

// ---------------------------------------------------------------------------------------------
// userdata

export type UserdataKind = 'none' | 'agent-config' | 'cloud-config' | 'script' | 'ignition' | 'other';

/** The userdata as text (gunzipped when gzip), and what it is. */
export function classifyUserdata(data: Userdata): { kind: UserdataKind; bytes: Buffer; text: string } {
  if (data === null) return { kind: 'none', bytes: Buffer.alloc(0), text: '' };
  let bytes = data;
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes, { maxOutputLength: MAX_USERDATA_BYTES });
    } catch {
      return { kind: 'other', bytes: data, text: '' };
    }
  }
  const text = bytes.toString('utf8').replace(/^\uFEFF/, '');
  if (text.trim() === '') return { kind: 'none', bytes, text };
  const first = text.split('\n', 1)[0]!.replace(/\r$/, '').trimEnd();
  if (first === '#cloud-config') return { kind: 'cloud-config', bytes, text };
  if (first.startsWith('#!')) return { kind: 'script', bytes, text };
  if (text.includes('\0')) return { kind: 'other', bytes, text };
  try {
    const doc = parseDocument(text, { prettyErrors: false });
    if (doc.errors.length === 0 && isMap(doc.contents)) {
      const v = doc.toJS({ maxAliasCount: 100 }) as Record<string, unknown>;
      if (v.version === 1) return { kind: 'agent-config', bytes, text };
      if (v.ignition !== undefined && typeof v.ignition === 'object') return { kind: 'ignition', bytes, text };
    }
  } catch {
    /* not YAML */
  }
  return { kind: 'other', bytes, text };
}

export interface UserdataOptions extends ActionOptions {
  /** Where the stamp of an agent config from userdata goes (a host path; default <root>/var/lib/oem-agent/userdata). */
  stampDir?: string;
  /** Runs coreos-cloudinit (default execa). */
  run?: Runner;
  /** Passed on to provision() (storage hook, fetch options). */
  provision?: Pick<ProvisionOptions, 'storage' | 'fetch' | 'run'>;
}

async function saveRaw(ctx: ProvisionContext, bytes: Buffer): Promise<void> {
  await ensureFile(ctx, USERDATA_RAW, { data: bytes }, { mode: 0o600, uid: ROOT_ID, gid: ROOT_ID });
}

/** Handles the userdata (see the module comment); throws when something failed. */
export async function applyUserdata(o: UserdataOptions, data: Userdata): Promise<UserdataKind> {
  const ctx = await context(o.env, o.run);
  const { kind, bytes, text } = classifyUserdata(data);
  const say = ctx.note;
  switch (kind) {
    case 'none':
      say('no userdata');
      return kind;
    case 'agent-config': {
      const r = validateConfig(text, { source: 'the userdata' });
      for (const p of r.problems) say(`userdata: ${formatProblem(p)}`);
      if (!r.config) throw new OemError('the userdata is an agent config with errors; nothing of it was applied');
      const stampDir = o.stampDir ?? posix.join(o.env.root, USERDATA_STAMP_DIR);
      say('the userdata is an agent config; applying it once');
      const strip = (line: string) => say(line.startsWith(LOG_PREFIX) ? line.slice(LOG_PREFIX.length) : line);
      await provision(r.config, { ...o.provision, root: o.env.root, stampDir, log: strip });
      return kind;
    }
    case 'cloud-config': {
      await saveRaw(ctx, bytes);
      const tool = await ctx.fs.resolve(COREOS_CLOUDINIT);
      const isFile = tool !== null && (await ctx.fs.inspect(tool))?.kind === 'file';
      if (!isFile) {
        say(`the userdata is a cloud-config, but ${ctx.fs.show(COREOS_CLOUDINIT)} is not there; saved it in ${ctx.fs.show(USERDATA_RAW)}, not applied`);
        return kind;
      }
      if (o.env.root !== '/') {
        say(`the userdata is a cloud-config: would run ${COREOS_CLOUDINIT} --from-file ${USERDATA_RAW} (not run: the root is ${o.env.root}, not /)`);
        return kind;
      }
      say(`the userdata is a cloud-config: running ${COREOS_CLOUDINIT} --from-file ${USERDATA_RAW}`);
      const r = await runChecked(o.run ?? execaRunner, COREOS_CLOUDINIT, ['--from-file', USERDATA_RAW]);
      for (const line of `${r.stdout}\n${r.stderr}`.split('\n')) if (line.trim() !== '') say(`coreos-cloudinit: ${line}`);
      return kind;
    }
    case 'script':
      await saveRaw(ctx, bytes);
      say(`the userdata is a script, which the agent does not run; saved it in ${ctx.fs.show(USERDATA_RAW)}`);
      return kind;
    case 'ignition':
      await saveRaw(ctx, bytes);
      say(`the userdata is an Ignition config, which Ignition applies (on first boot), not the agent; saved it in ${ctx.fs.show(USERDATA_RAW)}`);
      return kind;
    default:
      await saveRaw(ctx, bytes);
      say(`the userdata (${bytes.length} bytes) is neither an agent config nor a cloud-config; saved it in ${ctx.fs.show(USERDATA_RAW)}`);
      return kind;
  }
}

export async function userdataAction(o: UserdataOptions): Promise<UserdataKind> {
  await context(o.env);
  const data = await o.provider.userdata(o.env);
  return applyUserdata(o, data);
}
