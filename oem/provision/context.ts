/**
 * What the provisioning steps share: the tree being provisioned, the runner, the log (one line per
 * action, counted as changed or unchanged), and the account database of the tree (ROOT/etc/passwd,
 * group, shadow, gshadow) for resolving owners by name.
 */
import { OemError } from '../../src/shared/errors.js';
import type { Owner } from '../../src/shared/config/types.js';
import type { RootFs } from '../../src/shared/safe-fs.js';
import type { Runner } from './runner.js';

/** The past tense used in the log; a dry run logs `would <base form>`. */
export type Verb = 'created' | 'updated' | 'wrote' | 'linked' | 'replaced';
const BASE_FORM: Record<Verb, string> = { created: 'create', updated: 'update', wrote: 'write', linked: 'link', replaced: 'replace' };

/** Log lines start with this (the journal adds time and host; systemd's SyslogIdentifier is separate). */
export const LOG_PREFIX = 'oem-agent: ';

/** How remote file sources are fetched. */
export interface FetchOptions {
  /** Attempts in all (default 10). */
  tries: number;
  /** Wait before the second attempt, doubled after each failure (default 1000 ms)... */
  initialDelayMs: number;
  /** ...up to this (default 5000 ms). */
  maxDelayMs: number;
  /** Limit for one request, body included (default 60 s). */
  timeoutMs: number;
}

export interface ProvisionContext {
  /** The host directory that is the tree's root ('/' on a booted system). */
  readonly root: string;
  readonly fs: RootFs;
  readonly dryRun: boolean;
  readonly run: Runner;
  readonly fetch: FetchOptions;
  /** Logs `oem-agent: <message>`, not counted as an action. */
  note(message: string): void;
  /** Logs and counts a change: `oem-agent: <verb> <what>` (dry run: `oem-agent: would <verb> <what>`). */
  changed(verb: Verb, what: string): void;
  /** Logs and counts something already as configured: `oem-agent: unchanged <what>`. */
  unchanged(what: string): void;
  /** The tree's account database (cached until invalidateAccounts). */
  accounts(): Promise<Accounts>;
  invalidateAccounts(): void;
  /** Dry runs: directories and files that would have been created, so later steps see them. */
  readonly virtualDirs: Set<string>;
  readonly virtualFiles: Set<string>;
  /** Dry runs: users and groups that would have been created (with their ids when configured). */
  readonly plannedUsers: Map<string, { uid?: number; home: string }>;
  readonly plannedGroups: Map<string, { gid?: number }>;
}

/** A context from its parts; the account cache and the dry-run bookkeeping are filled in. */
export function makeContext(
  parts: Pick<ProvisionContext, 'root' | 'fs' | 'dryRun' | 'run' | 'fetch' | 'note' | 'changed' | 'unchanged'>,
): ProvisionContext {
  let accounts: Accounts | undefined;
  return {
    root: parts.root,
    fs: parts.fs,
    dryRun: parts.dryRun,
    run: parts.run,
    fetch: parts.fetch,
    note: parts.note,
    changed: parts.changed,
    unchanged: parts.unchanged,
    async accounts() {
      accounts ??= await Accounts.read(parts.fs);
      return accounts;
    },
    invalidateAccounts() {
      accounts = undefined;
    },
    virtualDirs: new Set(),
    virtualFiles: new Set(),
    plannedUsers: new Map(),
    plannedGroups: new Map(),
  };
}

export interface PasswdEntry {
  name: string;
  password: string;
  uid: number;
  gid: number;
  gecos: string;
  home: string;
  shell: string;
}

export interface GroupEntry {
  name: string;
  password: string;
  gid: number;
  members: string[];
}

function lines(text: string): string[][] {
  return text
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('+') && !l.startsWith('-'))
    .map((l) => l.split(':'));
}

const isId = (s: string | undefined): s is string => s !== undefined && /^\d+$/.test(s);

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const f of lines(text)) {
    if (f.length < 7 || !isId(f[2]) || !isId(f[3])) continue;
    out.push({ name: f[0]!, password: f[1]!, uid: Number(f[2]), gid: Number(f[3]), gecos: f[4]!, home: f[5]!, shell: f.slice(6).join(':') });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const f of lines(text)) {
    if (f.length < 4 || !isId(f[2])) continue;
    out.push({ name: f[0]!, password: f[1]!, gid: Number(f[2]), members: f[3]!.split(',').filter(Boolean) });
  }
  return out;
}

/** name -> password field of shadow or gshadow. */
export function parseShadow(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of lines(text)) if (f.length >= 2) out.set(f[0]!, f[1]!);
  return out;
}

export class Accounts {
  private readonly byName = new Map<string, PasswdEntry>();
  private readonly groupByName = new Map<string, GroupEntry>();

  constructor(
    /** Whether ROOT/etc/passwd and ROOT/etc/group exist. */
    readonly present: { passwd: boolean; group: boolean },
    readonly users: PasswdEntry[],
    readonly groups: GroupEntry[],
    private readonly shadow: Map<string, string>,
    private readonly gshadow: Map<string, string>,
  ) {
    for (const u of users) if (!this.byName.has(u.name)) this.byName.set(u.name, u);
    for (const g of groups) if (!this.groupByName.has(g.name)) this.groupByName.set(g.name, g);
  }

  static async read(fs: RootFs): Promise<Accounts> {
    const read = async (p: string) => (await fs.readFileFollow(p))?.toString('utf8') ?? null;
    const [passwd, group, shadow, gshadow] = await Promise.all(['/etc/passwd', '/etc/group', '/etc/shadow', '/etc/gshadow'].map(read));
    return new Accounts(
      { passwd: passwd !== null, group: group !== null },
      parsePasswd(passwd ?? ''),
      parseGroup(group ?? ''),
      parseShadow(shadow ?? ''),
      parseShadow(gshadow ?? ''),
    );
  }

  user(name: string): PasswdEntry | undefined {
    return this.byName.get(name);
  }

  group(name: string): GroupEntry | undefined {
    return this.groupByName.get(name);
  }

  userById(uid: number): PasswdEntry | undefined {
    return this.users.find((u) => u.uid === uid);
  }

  groupById(gid: number): GroupEntry | undefined {
    return this.groups.find((g) => g.gid === gid);
  }

  /** The user's password hash as stored (shadow when it has the user, else passwd). */
  userPassword(name: string): string | undefined {
    return this.shadow.get(name) ?? this.user(name)?.password;
  }

  groupPassword(name: string): string | undefined {
    return this.gshadow.get(name) ?? this.group(name)?.password;
  }
}

/** Fails clearly when the tree has no account database (useradd --root needs it as well). */
export function requireAccounts(ctx: ProvisionContext, acc: Accounts, why: string): void {
  const missing = [...(acc.present.passwd ? [] : ['/etc/passwd']), ...(acc.present.group ? [] : ['/etc/group'])];
  if (missing.length) {
    throw new OemError(`cannot ${why}: ${missing.map((m) => ctx.fs.show(m)).join(' and ')} ${missing.length > 1 ? 'are' : 'is'} missing in ${ctx.root}`, {
      hint: 'The root tree needs its account database: etc/passwd, etc/group, etc/shadow and etc/gshadow (useradd --root edits them).',
    });
  }
}

/** A resolved owner: the numeric id (undefined: a user or group a dry run has not created) and a name for the log. */
export interface Id {
  id: number | undefined;
  name: string;
}

export const ROOT_ID: Id = { id: 0, name: 'root' };

/** Resolves a user (kind 'user') or group owner by name or number in the tree's account database. */
export async function resolveOwner(ctx: ProvisionContext, owner: Owner | undefined, kind: 'user' | 'group', forPath: string): Promise<Id> {
  const acc = await ctx.accounts();
  const nameOf = (id: number) => (kind === 'user' ? acc.userById(id)?.name : acc.groupById(id)?.name) ?? String(id);
  if (owner === undefined) return { id: 0, name: nameOf(0) === '0' ? 'root' : nameOf(0) };
  if (typeof owner === 'number' || /^\d+$/.test(owner)) {
    const id = Number(owner);
    if (!Number.isSafeInteger(id) || id < 0 || id > 0xfffffffe) throw new OemError(`invalid ${kind} id ${owner} for ${forPath}`, { code: 'usage' });
    return { id, name: nameOf(id) };
  }
  const found = kind === 'user' ? acc.user(owner)?.uid : acc.group(owner)?.gid;
  if (found !== undefined) return { id: found, name: owner };
  if (ctx.dryRun) {
    if (kind === 'user' && ctx.plannedUsers.has(owner)) return { id: ctx.plannedUsers.get(owner)?.uid, name: owner };
    if (kind === 'group' && ctx.plannedGroups.has(owner)) return { id: ctx.plannedGroups.get(owner)?.gid, name: owner };
  }
  throw new OemError(`unknown ${kind} ${JSON.stringify(owner)} for ${forPath}: not in ${ctx.fs.show(kind === 'user' ? '/etc/passwd' : '/etc/group')}`, { code: 'usage' });
}

/** "0644" */
export function fmtMode(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** Parses an octal mode string such as "0644" or "4755". */
export function parseMode(mode: string | undefined, fallback: number, forPath: string): number {
  if (mode === undefined) return fallback;
  if (typeof mode !== 'string' || !/^[0-7]{1,5}$/.test(mode) || parseInt(mode, 8) > 0o7777) {
    throw new OemError(`invalid mode ${JSON.stringify(mode)} for ${forPath}: give an octal string such as "0644"`, { code: 'usage' });
  }
  return parseInt(mode, 8);
}

export function fmtOwner(uid: Id, gid: Id): string {
  return `${uid.name}:${gid.name}`;
}

export { BASE_FORM };
