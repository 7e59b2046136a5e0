/**
 * Groups and users, through the shadow tools run against the tree (`groupadd --root ROOT`,
 * `useradd --root ROOT`, and `groupmod`/`usermod` for existing ones, only where something differs),
 * and SSH keys in the update-ssh-keys layout: the key set `~/.ssh/authorized_keys.d/oem-agent`,
 * merged with the user's other sets into `~/.ssh/authorized_keys` (directories 0700, files 0600,
 * owned by the user).
 */
import { posix } from 'node:path';
import { OemError } from '../../src/shared/errors.js';
import { keySetContent, mergeKeySets, parseAuthorizedKeys, upgradeLegacyAuthorizedKeys, validKeySetName, type SshKey } from '../../src/shared/ssh-keys.js';
import type { Group, User } from '../../src/shared/config/types.js';
import { requireAccounts, type Accounts, type Id, type ProvisionContext } from './context.js';
import { ensureDirectory, ensureFile } from './files.js';
import { runChecked } from './runner.js';

/** The key set the agent writes. */
export const KEY_SET = 'oem-agent';

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;

function checkName(name: string, kind: 'user' | 'group'): void {
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw new OemError(`invalid ${kind} name ${JSON.stringify(name)}`, { code: 'usage' });
}

function checkId(id: number | undefined, what: string): void {
  if (id !== undefined && (!Number.isSafeInteger(id) || id < 0 || id > 0xfffffffe)) throw new OemError(`invalid ${what} ${id}`, { code: 'usage' });
}

/** The command line for messages, with password hashes left out. */
function shown(cmd: string, args: string[]): string {
  const out = [cmd];
  for (let i = 0; i < args.length; i++) {
    out.push(args[i]!);
    if (args[i] === '-p' && i + 1 < args.length) {
      out.push('<hash>');
      i++;
    }
  }
  return out.join(' ');
}

async function run(ctx: ProvisionContext, cmd: string, args: string[]): Promise<void> {
  await runChecked(ctx.run, cmd, args, shown(cmd, args));
  ctx.invalidateAccounts();
}

export async function applyGroups(ctx: ProvisionContext, groups: Group[]): Promise<void> {
  for (const g of groups) {
    checkName(g.name, 'group');
    checkId(g.gid, `gid for group ${g.name}`);
    const acc = await ctx.accounts();
    requireAccounts(ctx, acc, `create the group ${g.name}`);
    const have = acc.group(g.name);
    if (!have) {
      const clash = g.gid !== undefined ? acc.groupById(g.gid) : undefined;
      if (clash) throw new OemError(`cannot create the group ${g.name} with gid ${g.gid}: the group ${clash.name} has it`);
      const args = ['--root', ctx.root];
      if (g.gid !== undefined) args.push('-g', String(g.gid));
      if (g.system) args.push('-r');
      if (g.password_hash !== undefined) args.push('-p', g.password_hash);
      args.push(g.name);
      if (ctx.dryRun) {
        ctx.plannedGroups.set(g.name, g.gid !== undefined ? { gid: g.gid } : {});
        ctx.changed('created', `group ${g.name} (gid ${g.gid ?? 'chosen by groupadd'}${g.system ? ', system' : ''})`);
        continue;
      }
      await run(ctx, 'groupadd', args);
      const made = (await ctx.accounts()).group(g.name);
      if (!made) throw new OemError(`groupadd did not create the group ${g.name} in ${ctx.fs.show('/etc/group')}`);
      ctx.changed('created', `group ${g.name} (gid ${made.gid}${g.system ? ', system' : ''})`);
      continue;
    }
    const args: string[] = [];
    const what: string[] = [];
    if (g.gid !== undefined && g.gid !== have.gid) {
      const clash = acc.groupById(g.gid);
      if (clash) throw new OemError(`cannot give the group ${g.name} gid ${g.gid}: the group ${clash.name} has it`);
      args.push('-g', String(g.gid));
      what.push(`gid ${have.gid} -> ${g.gid}`);
    }
    if (g.password_hash !== undefined && acc.groupPassword(g.name) !== g.password_hash) {
      args.push('-p', g.password_hash);
      what.push('password');
    }
    if (!args.length) {
      ctx.unchanged(`group ${g.name} (gid ${have.gid})`);
      continue;
    }
    if (!ctx.dryRun) await run(ctx, 'groupmod', ['--root', ctx.root, ...args, g.name]);
    ctx.changed('updated', `group ${g.name} (${what.join(', ')})`);
  }
}

/** A group's gid by name or number; undefined when unknown (or planned without a gid in a dry run). */
function groupExists(ctx: ProvisionContext, acc: Accounts, name: string): boolean {
  if (/^\d+$/.test(name)) return true;
  return acc.group(name) !== undefined || (ctx.dryRun && ctx.plannedGroups.has(name));
}

function gidOf(acc: Accounts, name: string): number | undefined {
  return /^\d+$/.test(name) ? Number(name) : acc.group(name)?.gid;
}

function isMember(acc: Accounts, group: string, user: string): boolean {
  const g = /^\d+$/.test(group) ? acc.groupById(Number(group)) : acc.group(group);
  return g !== undefined && g.members.includes(user);
}

export async function applyUsers(ctx: ProvisionContext, users: User[]): Promise<void> {
  for (const u of users) {
    checkName(u.name, 'user');
    checkId(u.uid, `uid for user ${u.name}`);
    const acc = await ctx.accounts();
    requireAccounts(ctx, acc, `create the user ${u.name}`);
    for (const g of [...(u.primary_group !== undefined ? [u.primary_group] : []), ...(u.groups ?? [])]) {
      if (typeof g !== 'string' || !groupExists(ctx, acc, g)) {
        throw new OemError(`user ${u.name}: unknown group ${JSON.stringify(g)} (not in ${ctx.fs.show('/etc/group')} and not in the config's groups)`, { code: 'usage' });
      }
    }
    if (u.home_dir !== undefined && !u.home_dir.startsWith('/')) throw new OemError(`user ${u.name}: home_dir must be an absolute path`, { code: 'usage' });
    const have = acc.user(u.name);
    if (!have) await createUser(ctx, acc, u);
    else await updateUser(ctx, acc, u);
    if (u.ssh_authorized_keys !== undefined) await writeKeys(ctx, u);
  }
}

async function createUser(ctx: ProvisionContext, acc: Accounts, u: User): Promise<void> {
  const clash = u.uid !== undefined ? acc.userById(u.uid) : undefined;
  if (clash) throw new OemError(`cannot create the user ${u.name} with uid ${u.uid}: the user ${clash.name} has it`);
  const args = ['--root', ctx.root];
  if (u.uid !== undefined) args.push('-u', String(u.uid));
  if (u.home_dir !== undefined) args.push('-d', u.home_dir);
  args.push(u.no_create_home ? '-M' : '-m');
  let primary = u.primary_group;
  if (primary === undefined && !u.no_user_group && (acc.group(u.name) || (ctx.dryRun && ctx.plannedGroups.has(u.name)))) {
    // useradd would refuse to create the user's own group; the group of that name is the one meant.
    primary = u.name;
    ctx.note(`user ${u.name}: the group ${u.name} exists, using it as the primary group`);
  }
  // Explicit either way, so login.defs (USERGROUPS_ENAB) of the tree does not decide.
  if (primary !== undefined) args.push('-g', primary);
  else if (u.no_user_group) args.push('-N');
  else args.push('-U');
  if (u.groups?.length) args.push('-G', u.groups.join(','));
  if (u.system) args.push('-r');
  if (u.gecos !== undefined) args.push('-c', u.gecos);
  if (u.no_log_init) args.push('-l');
  if (u.shell !== undefined) args.push('-s', u.shell);
  if (u.password_hash !== undefined) args.push('-p', u.password_hash);
  args.push(u.name);
  if (ctx.dryRun) {
    const home = u.home_dir ?? `/home/${u.name}`;
    ctx.plannedUsers.set(u.name, { ...(u.uid !== undefined ? { uid: u.uid } : {}), home });
    ctx.changed('created', `user ${u.name} (uid ${u.uid ?? 'chosen by useradd'}, home ${home}${u.system ? ', system' : ''})`);
    return;
  }
  await run(ctx, 'useradd', args);
  const after = await ctx.accounts();
  const made = after.user(u.name);
  if (!made) throw new OemError(`useradd did not create the user ${u.name} in ${ctx.fs.show('/etc/passwd')}`);
  const group = after.groupById(made.gid)?.name ?? String(made.gid);
  ctx.changed('created', `user ${u.name} (uid ${made.uid}, group ${group}, home ${made.home}${u.system ? ', system' : ''})`);
}

async function updateUser(ctx: ProvisionContext, acc: Accounts, u: User): Promise<void> {
  const have = acc.user(u.name)!;
  const args: string[] = [];
  const what: string[] = [];
  if (u.uid !== undefined && u.uid !== have.uid) {
    const clash = acc.userById(u.uid);
    if (clash) throw new OemError(`cannot give the user ${u.name} uid ${u.uid}: the user ${clash.name} has it`);
    args.push('-u', String(u.uid));
    what.push(`uid ${have.uid} -> ${u.uid}`);
  }
  if (u.home_dir !== undefined && u.home_dir !== have.home) {
    args.push('-d', u.home_dir);
    what.push(`home ${have.home} -> ${u.home_dir}`);
  }
  if (u.primary_group !== undefined) {
    const gid = gidOf(acc, u.primary_group);
    if (gid !== have.gid) {
      args.push('-g', u.primary_group);
      what.push(`primary group ${u.primary_group}`);
    }
  }
  const missing = (u.groups ?? []).filter((g) => !isMember(acc, g, u.name));
  if (missing.length) {
    // Added to the groups it is not in yet; memberships set up by others are kept.
    args.push('-a', '-G', missing.join(','));
    what.push(`groups +${missing.join(',+')}`);
  }
  if (u.gecos !== undefined && u.gecos !== have.gecos) {
    args.push('-c', u.gecos);
    what.push('gecos');
  }
  if (u.shell !== undefined && u.shell !== have.shell) {
    args.push('-s', u.shell);
    what.push(`shell ${u.shell}`);
  }
  if (u.password_hash !== undefined && acc.userPassword(u.name) !== u.password_hash) {
    args.push('-p', u.password_hash);
    what.push('password');
  }
  if (!args.length) {
    ctx.unchanged(`user ${u.name} (uid ${have.uid})`);
    return;
  }
  if (!ctx.dryRun) await run(ctx, 'usermod', ['--root', ctx.root, ...args, u.name]);
  ctx.changed('updated', `user ${u.name} (${what.join(', ')})`);
}

export const countKeys = (text: string) => text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).length;
export const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The key set of the agent and the merged authorized_keys, keeping the user's other key sets. */
async function writeKeys(ctx: ProvisionContext, u: User): Promise<void> {
  const keys = u.ssh_authorized_keys ?? [];
  if (keys.some((k) => typeof k !== 'string')) throw new OemError(`user ${u.name}: ssh_authorized_keys must be strings`, { code: 'usage' });
  const parsed = keys.length ? parseAuthorizedKeys(keys.join('\n'), `the ssh_authorized_keys of user ${u.name}`) : [];
  const acc = await ctx.accounts();
  const entry = acc.user(u.name);
  let uid: Id;
  let gid: Id;
  let home: string;
  if (entry) {
    uid = { id: entry.uid, name: u.name };
    gid = { id: entry.gid, name: acc.groupById(entry.gid)?.name ?? String(entry.gid) };
    home = entry.home;
  } else if (ctx.dryRun && ctx.plannedUsers.has(u.name)) {
    const planned = ctx.plannedUsers.get(u.name)!;
    uid = { id: planned.uid, name: u.name };
    gid = { id: undefined, name: u.primary_group ?? (u.no_user_group ? 'users' : u.name) };
    home = planned.home;
  } else {
    throw new OemError(`internal: user ${u.name} not found after creating it`);
  }
  if (!home.startsWith('/') || posix.normalize(home) === '/') throw new OemError(`user ${u.name}: cannot write SSH keys into the home directory ${JSON.stringify(home)}`);
  home = posix.normalize(home);
  await writeKeySet(ctx, home, uid, gid, KEY_SET, parsed);
}

/**
 * Writes a key set into a home in the update-ssh-keys layout: ~/.ssh/authorized_keys.d/<set> and the
 * merged ~/.ssh/authorized_keys (other sets kept; a legacy authorized_keys becomes
 * old_authorized_keys). Directories 0700, files 0600, owned by the user.
 */
export async function writeKeySet(ctx: ProvisionContext, home: string, uid: Id, gid: Id, setName: string, keys: SshKey[]): Promise<void> {
  const sshDir = `${home}/.ssh`;
  const setsDir = `${sshDir}/authorized_keys.d`;
  await ensureDirectory(ctx, home, { mode: 0o755, uid, gid, onlyIfMissing: true });
  await ensureDirectory(ctx, sshDir, { mode: 0o700, uid, gid });
  await ensureDirectory(ctx, setsDir, { mode: 0o700, uid, gid });

  const existing: Record<string, string> = {};
  for (const name of (await ctx.fs.readdir(setsDir)) ?? []) {
    if (!validKeySetName(name)) continue;
    const b = await ctx.fs.readFile(`${setsDir}/${name}`);
    if (b) existing[name] = b.toString('utf8');
  }
  const ak = await ctx.fs.readFile(`${sshDir}/authorized_keys`);
  const sets = upgradeLegacyAuthorizedKeys(ak ? ak.toString('utf8') : null, existing);
  sets[setName] = keySetContent(keys);
  for (const [name, content] of Object.entries(sets).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (existing[name] !== undefined && name !== setName) continue;
    await ensureFile(ctx, `${setsDir}/${name}`, { data: Buffer.from(content) }, { mode: 0o600, uid, gid, detail: plural(countKeys(content), 'key') });
  }
  const merged = mergeKeySets(sets);
  const nonEmpty = Object.values(sets).filter((s) => countKeys(s) > 0).length;
  await ensureFile(ctx, `${sshDir}/authorized_keys`, { data: Buffer.from(merged) }, {
    mode: 0o600,
    uid,
    gid,
    detail: `${plural(countKeys(merged), 'key')} from ${plural(nonEmpty, 'key set')}`,
  });
}
