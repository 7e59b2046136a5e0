/**
 * What Azure and Azure Stack share: a small strict XML scanner (ovf-env.xml, the WireServer's
 * documents) and the WireServer, the host agent's HTTP endpoint in every VM's network.
 *
 * Finding it: env.wireServerUrl (--wireserver-url), else DHCP option 245 in a systemd-networkd lease
 * under <root>/run/systemd/netif/leases/ (`OPTION_245=a83f8110`: the address as 8 hex digits, with
 * colons when NetworkManager wrote it), else the well-known http://168.63.129.16, the way Afterburn
 * and WALinuxAgent do.
 *
 * Every request carries `x-ms-agent-name` and `x-ms-version: 2012-11-30` (the protocol version whose
 * documents are read here). Afterburn also asks /?comp=versions whether the WireServer speaks that
 * version before anything else; the agent does not (one round trip less: a WireServer that did not
 * would refuse the requests, which name the version).
 *
 *   GET  /machine/?comp=goalstate   the goal state:
 *        <GoalState><Incarnation>n</Incarnation><Container><ContainerId>guid</ContainerId>
 *        <RoleInstanceList><RoleInstance><InstanceId>id</InstanceId><Configuration>
 *        <SharedConfig>http://…/machine/…?comp=config&amp;type=sharedConfig…</SharedConfig>…
 *   POST /machine/?comp=health      the health report (Content-Type: text/xml; charset=utf-8): the
 *        goal state's Incarnation, ContainerId and InstanceId with <State>Ready</State>; this is
 *        the boot check-in, without which Azure considers provisioning failed
 *   GET  <SharedConfig>             the shared configuration: <Incarnation instance="name"/> and
 *        <Instances><Instance id="name" address="10.0.0.4"><InputEndpoints><Endpoint
 *        loadBalancedPublicAddress="40.1.2.3:22"/>…: the VM's dynamic (private) address and its
 *        load-balanced public (virtual) one
 *
 * Everything the WireServer sends is data: documents are size-bounded and parsed strictly (no
 * DOCTYPE, no entities); the values put into the health report must have their expected shape
 * (a decimal incarnation; ids of printable ASCII, at most 256 characters) and are escaped anyway;
 * the shared configuration is asked of the WireServer found above (its path and query only), never
 * of a host the goal state names.
 */
import { isIPv4 } from 'node:net';
import { describe, OemError } from '../../src/shared/errors.js';
import { HttpError, httpRequest, joinUrl, showUrl } from './http.js';
import { leaseEntries, readLeases } from './leases.js';
import { MAX_SMALL_BYTES } from './local-io.js';
import type { ProviderEnv } from './types.js';
import { cleanIp, shown } from './values.js';

export { LEASES_DIR } from './leases.js';

// ---------------------------------------------------------------------------------------------
// XML

const XML_NS = 'http://www.w3.org/XML/1998/namespace';
const MAX_DEPTH = 64;

export interface XmlElement {
  /** Namespace URI ('' for none). */
  ns: string;
  local: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  /** The element's own character data, concatenated (text of children excluded). */
  text: string;
}

export class XmlError extends Error {}

const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const NAME = /^[A-Za-z_][A-Za-z0-9._-]*(?::[A-Za-z_][A-Za-z0-9._-]*)?$/;

function decodeText(raw: string, at: number): string {
  if (raw.includes('<')) throw new XmlError(`'<' in a value near offset ${at}`);
  return raw.replace(/&([^;&\s]*);?/g, (m: string, ref: string) => {
    if (!m.endsWith(';')) throw new XmlError(`a bare '&' near offset ${at}`);
    const named = PREDEFINED[ref];
    if (named !== undefined) return named;
    const num = /^#(?:x([0-9A-Fa-f]{1,6})|([0-9]{1,7}))$/.exec(ref);
    if (num) {
      const code = num[1] !== undefined ? parseInt(num[1], 16) : parseInt(num[2] ?? '', 10);
      const ok = code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) || (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff);
      if (!ok) throw new XmlError(`character reference &${ref}; is not allowed`);
      return String.fromCodePoint(code);
    }
    throw new XmlError(`unknown entity &${ref}; (only the predefined entities are accepted)`);
  });
}

interface RawTag {
  qname: string;
  attrs: [string, string][];
  selfClosing: boolean;
}

function parseTagBody(body: string, at: number): RawTag {
  const m = /^([^\s/>]+)/.exec(body);
  if (!m || !m[1] || !NAME.test(m[1])) throw new XmlError(`bad tag name near offset ${at}`);
  const qname = m[1];
  let rest = body.slice(qname.length);
  let selfClosing = false;
  if (rest.endsWith('/')) {
    selfClosing = true;
    rest = rest.slice(0, -1);
  }
  const attrs: [string, string][] = [];
  const attrRe = /^\s+([^\s=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/;
  while (rest.trim() !== '') {
    const a = attrRe.exec(rest);
    if (!a || !a[1] || !NAME.test(a[1])) throw new XmlError(`bad attribute in <${qname}> near offset ${at}`);
    if (attrs.some(([n]) => n === a[1])) throw new XmlError(`attribute ${a[1]} given twice in <${qname}>`);
    attrs.push([a[1], decodeText(a[2] ?? a[3] ?? '', at)]);
    rest = rest.slice(a[0].length);
  }
  return { qname, attrs, selfClosing };
}

/**
 * Parses an XML document into elements with resolved namespaces. Strict: refuses DOCTYPE and entity
 * declarations, unknown entities, undeclared prefixes, unbalanced or crossed tags, text outside the
 * root element, and more than 64 levels of nesting.
 */
export function parseXml(input: string): XmlElement {
  let s = input.startsWith('\uFEFF') ? input.slice(1) : input;
  if (s.includes('\0')) throw new XmlError('NUL byte in the document');
  s = s.replace(/\r\n?/g, '\n');
  let i = 0;
  let root: XmlElement | undefined;
  const stack: { el: XmlElement; qname: string; scope: Map<string, string> }[] = [];
  const textParts: string[][] = [];
  const finish = (el: XmlElement, parts: string[]) => {
    el.text = parts.join('');
  };
  while (i < s.length) {
    const lt = s.indexOf('<', i);
    const chunkEnd = lt === -1 ? s.length : lt;
    if (chunkEnd > i) {
      const raw = s.slice(i, chunkEnd);
      if (raw.includes(']]>')) throw new XmlError(`']]>' in text near offset ${i}`);
      if (stack.length === 0) {
        if (raw.trim() !== '') throw new XmlError(`text outside the root element near offset ${i}`);
      } else {
        textParts[textParts.length - 1]?.push(decodeText(raw, i));
      }
    }
    if (lt === -1) break;
    i = lt;
    if (s.startsWith('<!--', i)) {
      const end = s.indexOf('-->', i + 4);
      if (end === -1) throw new XmlError('unterminated comment');
      i = end + 3;
      continue;
    }
    if (s.startsWith('<![CDATA[', i)) {
      if (stack.length === 0) throw new XmlError('CDATA outside the root element');
      const end = s.indexOf(']]>', i + 9);
      if (end === -1) throw new XmlError('unterminated CDATA section');
      textParts[textParts.length - 1]?.push(s.slice(i + 9, end));
      i = end + 3;
      continue;
    }
    if (s.startsWith('<!', i)) {
      const what = /^<!([A-Za-z]*)/.exec(s.slice(i, i + 12))?.[1] ?? '';
      throw new XmlError(`<!${what}> is not accepted (no DOCTYPE or entity declarations)`);
    }
    if (s.startsWith('<?', i)) {
      const end = s.indexOf('?>', i + 2);
      if (end === -1) throw new XmlError('unterminated processing instruction');
      i = end + 2;
      continue;
    }
    const gt = s.indexOf('>', i);
    if (gt === -1) throw new XmlError(`unterminated tag near offset ${i}`);
    const body = s.slice(i + 1, gt);
    if (body.includes('<')) throw new XmlError(`'<' inside a tag near offset ${i}`);
    if (body.startsWith('/')) {
      const qname = body.slice(1).trim();
      const top = stack.pop();
      if (!top) throw new XmlError(`closing tag </${qname}> without an open element`);
      if (top.qname !== qname) throw new XmlError(`</${qname}> closes <${top.qname}>`);
      finish(top.el, textParts.pop() ?? []);
      i = gt + 1;
      continue;
    }
    const tag = parseTagBody(body, i);
    if (root !== undefined && stack.length === 0) throw new XmlError('more than one root element');
    if (stack.length >= MAX_DEPTH) throw new XmlError(`elements nested more than ${MAX_DEPTH} deep`);
    const scope = new Map(stack[stack.length - 1]?.scope ?? [['xml', XML_NS]]);
    for (const [name, value] of tag.attrs) {
      if (name === 'xmlns') scope.set('', value);
      else if (name.startsWith('xmlns:')) scope.set(name.slice(6), value);
    }
    const colon = tag.qname.indexOf(':');
    const prefix = colon === -1 ? '' : tag.qname.slice(0, colon);
    const local = colon === -1 ? tag.qname : tag.qname.slice(colon + 1);
    const ns = scope.get(prefix);
    if (ns === undefined) {
      if (prefix !== '') throw new XmlError(`undeclared namespace prefix ${prefix}: in <${tag.qname}>`);
    }
    const attributes: Record<string, string> = {};
    for (const [name, value] of tag.attrs) {
      const c = name.indexOf(':');
      if (c !== -1 && name.slice(0, c) !== 'xmlns' && !scope.has(name.slice(0, c))) {
        throw new XmlError(`undeclared namespace prefix ${name.slice(0, c)}: in attribute ${name}`);
      }
      attributes[name] = value;
    }
    const el: XmlElement = { ns: ns ?? '', local, attributes, children: [], text: '' };
    const parent = stack[stack.length - 1];
    if (parent) parent.el.children.push(el);
    else root = el;
    if (!tag.selfClosing) {
      stack.push({ el, qname: tag.qname, scope });
      textParts.push([]);
    }
    i = gt + 1;
  }
  if (stack.length > 0) throw new XmlError(`<${stack[stack.length - 1]?.qname}> is not closed`);
  if (root === undefined) throw new XmlError('no root element');
  return root;
}

/** The children of `el` named `local` in the namespace `ns` ('' for none, as in WireServer documents). */
export function xmlChildren(el: XmlElement | undefined, local: string, ns = ''): XmlElement[] {
  return el ? el.children.filter((c) => c.ns === ns && c.local === local) : [];
}

/** The first element along `path` (children without a namespace), or undefined. */
function first(el: XmlElement | undefined, ...path: string[]): XmlElement | undefined {
  let cur = el;
  for (const p of path) cur = xmlChildren(cur, p)[0];
  return cur;
}

/** Text for XML character data and attribute values: & < > " ' as references. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}

/** Parses a document named `what` for messages; an OemError for anything malformed. */
function parseDocument(xml: string, what: string, rootName: string): XmlElement {
  let root: XmlElement;
  try {
    root = parseXml(xml);
  } catch (err) {
    if (err instanceof XmlError) throw new OemError(`${what} is not valid XML: ${err.message}`);
    throw err;
  }
  if (root.local !== rootName || root.ns !== '') throw new OemError(`${what}: the root element is <${root.local}>, not <${rootName}>`);
  return root;
}

// ---------------------------------------------------------------------------------------------
// Finding the WireServer

/** Azure's well-known WireServer address (used when no DHCP lease names another). */
export const WIRESERVER_ADDRESS = '168.63.129.16';
/** The protocol headers of every WireServer request, as Afterburn sends them. */
export const WIRESERVER_HEADERS: Readonly<Record<string, string>> = { 'x-ms-agent-name': 'com.coreos.afterburn', 'x-ms-version': '2012-11-30' };
export const HEALTH_CONTENT_TYPE = 'text/xml; charset=utf-8';
/** Largest goal state accepted (a real one is a few KiB). */
export const MAX_GOALSTATE_BYTES = MAX_SMALL_BYTES;
/** Largest shared configuration accepted (one Instance per VM of a cloud service). */
export const MAX_SHARED_CONFIG_BYTES = 4 * 1024 * 1024;

/** The IPv4 address in a DHCP option 245 value (`a83f8110` or `a8:3f:81:10`), or undefined. */
export function option245Address(value: string): string | undefined {
  const v = value.trim();
  if (!/^[0-9A-Fa-f]{8}$/.test(v) && !/^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){3}$/.test(v)) return undefined;
  const hex = v.replace(/:/g, '');
  const ip = [0, 2, 4, 6].map((o) => parseInt(hex.slice(o, o + 2), 16)).join('.');
  return isIPv4(ip) && ip !== '0.0.0.0' && ip !== '255.255.255.255' ? ip : undefined;
}

/** The OPTION_245 line of a networkd lease file's text: the address, `null` for a bad value, undefined for none. */
export function leaseOption245(text: string): string | null | undefined {
  return option245OfLease(leaseEntries(text));
}

function option245OfLease(entries: Map<string, string>): string | null | undefined {
  const value = entries.get('OPTION_245');
  return value === undefined ? undefined : (option245Address(value) ?? null);
}

/** The WireServer address from the first networkd lease (in ifindex order) with a valid option 245. */
export async function wireServerFromLeases(env: ProviderEnv, id: string): Promise<{ address: string; file: string } | undefined> {
  for await (const { file, entries } of readLeases(env, (f, err) => env.log(`${id}: skipped the lease file ${f}: ${describe(err)}`))) {
    const address = option245OfLease(entries);
    if (address === null) env.log(`${id}: ignoring the DHCP option 245 in ${file}: not an IPv4 address in hex`);
    else if (address !== undefined) return { address, file };
  }
  return undefined;
}

/** The WireServer's base URL: env.wireServerUrl, else DHCP option 245, else http://168.63.129.16. */
export async function wireServerBase(env: ProviderEnv, id: string): Promise<string> {
  if (env.wireServerUrl !== undefined && env.wireServerUrl !== '') return env.wireServerUrl.replace(/\/+$/, '');
  const leased = await wireServerFromLeases(env, id);
  if (leased !== undefined) {
    env.log(`${id}: the WireServer is ${leased.address} (DHCP option 245 in ${leased.file})`);
    return `http://${leased.address}`;
  }
  env.log(`${id}: no DHCP option 245 in the networkd leases; using the WireServer at ${WIRESERVER_ADDRESS}`);
  return `http://${WIRESERVER_ADDRESS}`;
}

// ---------------------------------------------------------------------------------------------
// The goal state and the health report

/** The parts of a goal state used here, as text (trimmed); checked where they are used. */
export interface GoalState {
  incarnation?: string;
  containerId?: string;
  /** Of the first RoleInstance (a VM has one). */
  instanceId?: string;
  /** The URL of the shared configuration (first RoleInstance). */
  sharedConfig?: string;
}

/** The goal state's values; an OemError for a document that is not a goal state. */
export function parseGoalState(xml: string): GoalState {
  const root = parseDocument(xml, 'the goal state', 'GoalState');
  const text = (el: XmlElement | undefined) => (el === undefined ? undefined : el.text.trim());
  const container = first(root, 'Container');
  const role = first(container, 'RoleInstanceList', 'RoleInstance');
  const gs: GoalState = {};
  const set = (k: keyof GoalState, v: string | undefined) => {
    if (v !== undefined) gs[k] = v;
  };
  set('incarnation', text(first(root, 'Incarnation')));
  set('containerId', text(first(container, 'ContainerId')));
  set('instanceId', text(first(role, 'InstanceId')));
  set('sharedConfig', text(first(role, 'Configuration', 'SharedConfig')));
  return gs;
}

const MAX_ID = 256;

/** Why `value` cannot go into the health report as `name`, or undefined. */
function idProblem(name: string, value: string | undefined): string | undefined {
  if (value === undefined || value === '') return `has no ${name}`;
  if (name === 'Incarnation') return /^[0-9]{1,10}$/.test(value) ? undefined : `has the ${name} ${shown(value)}, which is not a decimal number`;
  if (value.length > MAX_ID) return `has the ${name} ${shown(value)}, longer than ${MAX_ID} characters`;
  if (!/^[\x21-\x7e]+$/.test(value)) return `has the ${name} ${shown(value)}, which is not printable ASCII without spaces`;
  return undefined;
}

/** The Ready health report for the goal state; an OemError when a value is missing or has an unexpected shape. */
export function healthReport(gs: GoalState): string {
  for (const [name, value] of [
    ['Incarnation', gs.incarnation],
    ['ContainerId', gs.containerId],
    ['InstanceId', gs.instanceId],
  ] as const) {
    const why = idProblem(name, value);
    if (why !== undefined) throw new OemError(`the goal state ${why}; not reporting it to the WireServer`);
  }
  const x = (v: string | undefined) => escapeXml(v ?? '');
  return [
    '<?xml version="1.0" encoding="utf-8"?>',
    '<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">',
    `  <GoalStateIncarnation>${x(gs.incarnation)}</GoalStateIncarnation>`,
    '  <Container>',
    `    <ContainerId>${x(gs.containerId)}</ContainerId>`,
    '    <RoleInstanceList>',
    '      <Role>',
    `        <InstanceId>${x(gs.instanceId)}</InstanceId>`,
    '        <Health>',
    '          <State>Ready</State>',
    '        </Health>',
    '      </Role>',
    '    </RoleInstanceList>',
    '  </Container>',
    '</Health>',
    '',
  ].join('\n');
}

async function wireGet(env: ProviderEnv, url: string, limit: number, what: string): Promise<string> {
  const r = await httpRequest(url, env, { headers: { ...WIRESERVER_HEADERS } });
  const body = r?.body ?? Buffer.alloc(0);
  if (body.length > limit) throw new OemError(`${what} is ${body.length} bytes, more than the ${limit} allowed`);
  return body.toString('utf8');
}

/** The goal state from the WireServer at `base`; an OemError naming `id` when it cannot be had. */
export async function fetchGoalState(env: ProviderEnv, base: string, id: string): Promise<GoalState> {
  let xml: string;
  try {
    xml = await wireGet(env, joinUrl(base, '/machine/?comp=goalstate'), MAX_GOALSTATE_BYTES, 'the goal state');
  } catch (err) {
    throw new OemError(`${id}: cannot get the goal state from the WireServer: ${describe(err)}`, { code: 'network', cause: err, hint: hintFor(env) });
  }
  try {
    return parseGoalState(xml);
  } catch (err) {
    throw new OemError(`${id}: refusing the WireServer's answer: ${describe(err)}`, { cause: err });
  }
}

function hintFor(env: ProviderEnv): string {
  return env.wireServerUrl
    ? 'check --wireserver-url'
    : `the WireServer answers only inside an Azure or Azure Stack VM (and only root on images that firewall it); --wireserver-url sets its address`;
}

/** How many times a health report refused with 410 (the goal state changed meanwhile) is made again. */
const GONE_ROUNDS = 3;

/**
 * The boot check-in: reads the goal state and posts the Ready health report for it. A report the
 * WireServer refuses with 410 Gone (a newer goal state) is made again for the new goal state.
 */
export async function reportReady(env: ProviderEnv, id: string): Promise<void> {
  const base = await wireServerBase(env, id);
  for (let round = 1; ; round++) {
    const gs = await fetchGoalState(env, base, id);
    let body: string;
    try {
      body = healthReport(gs);
    } catch (err) {
      throw new OemError(`${id}: ${describe(err)}`, { cause: err });
    }
    try {
      await httpRequest(joinUrl(base, '/machine/?comp=health'), env, {
        method: 'POST',
        headers: { ...WIRESERVER_HEADERS, 'Content-Type': HEALTH_CONTENT_TYPE },
        body,
      });
    } catch (err) {
      if (err instanceof HttpError && err.status === 410 && round < GONE_ROUNDS) {
        env.log(`${id}: the WireServer refused the health report for incarnation ${gs.incarnation} (HTTP 410: the goal state changed); reading it again`);
        continue;
      }
      throw new OemError(`${id}: cannot report Ready to the WireServer: ${describe(err)}`, { code: 'network', cause: err, hint: hintFor(env) });
    }
    env.log(`${id}: reported Ready to the WireServer at ${showUrl(base).replace(/\/$/, '')} (goal state incarnation ${gs.incarnation})`);
    return;
  }
}

// ---------------------------------------------------------------------------------------------
// The shared configuration

export interface SharedConfigAddresses {
  /** The VM's own (private) IPv4 address. */
  dynamic?: string;
  /** Its load-balanced public IPv4 address. */
  virtual?: string;
}

/** The IPv4 address of `a.b.c.d:port` (or a bare `a.b.c.d`), or undefined. */
function endpointIpv4(value: string): string | undefined {
  const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(value.trim());
  if (!m || !isIPv4(m[1] ?? '') || (m[2] !== undefined && Number(m[2]) > 65535)) return undefined;
  return m[1];
}

/**
 * The addresses in a shared configuration, as Afterburn reads them: of the Instance whose id is
 * <Incarnation instance="…">, `address` is the dynamic address, and the loadBalancedPublicAddress of
 * its InputEndpoints the virtual one (the last usable). Bad values are dropped with a log line.
 */
export function parseSharedConfig(xml: string, log: (line: string) => void, id: string): SharedConfigAddresses {
  const root = parseDocument(xml, 'the shared configuration', 'SharedConfig');
  const out: SharedConfigAddresses = {};
  const instance = first(root, 'Incarnation')?.attributes.instance;
  if (instance === undefined || instance === '') {
    log(`${id}: the shared configuration names no instance (<Incarnation instance=…>); no addresses from it`);
    return out;
  }
  const matching = xmlChildren(first(root, 'Instances'), 'Instance').filter((i) => i.attributes.id === instance);
  if (matching.length === 0) log(`${id}: the shared configuration has no Instance ${shown(instance)}; no addresses from it`);
  for (const inst of matching) {
    const dynamic = cleanIp(inst.attributes.address, (l) => log(`${id}: ${l}`), "the shared configuration's instance address", 4);
    if (dynamic !== undefined) out.dynamic = dynamic;
    for (const ep of xmlChildren(first(inst, 'InputEndpoints'), 'Endpoint')) {
      const lb = ep.attributes.loadBalancedPublicAddress;
      if (lb === undefined || lb === '') continue;
      const ip = endpointIpv4(lb);
      if (ip === undefined) log(`${id}: ignoring the loadBalancedPublicAddress ${shown(lb)}: not an IPv4 address[:port]`);
      else out.virtual = ip;
    }
  }
  return out;
}

/** The path and query of the goal state's SharedConfig URL, when it is a WireServer URL under /machine. */
function sharedConfigPath(value: string, base: string, log: (line: string) => void, id: string): string | undefined {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    log(`${id}: ignoring the goal state's SharedConfig ${shown(value)}: not a URL`);
    return undefined;
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.pathname.startsWith('/machine') || value.length > 4096) {
    log(`${id}: ignoring the goal state's SharedConfig ${shown(value)}: not a WireServer /machine URL`);
    return undefined;
  }
  if (u.host !== new URL(base).host) log(`${id}: the goal state names the shared configuration at ${u.host}; asking the WireServer at ${new URL(base).host}`);
  return `${u.pathname}${u.search}`;
}

/**
 * The addresses from the WireServer: the goal state, then its shared configuration. A WireServer that
 * cannot be reached is an OemError; a goal state without a SharedConfig, or a 404 for it, gives none.
 */
export async function sharedConfigAddresses(env: ProviderEnv, id: string): Promise<SharedConfigAddresses> {
  const base = await wireServerBase(env, id);
  const gs = await fetchGoalState(env, base, id);
  if (gs.sharedConfig === undefined || gs.sharedConfig === '') {
    env.log(`${id}: the goal state names no shared configuration; no addresses from the WireServer`);
    return {};
  }
  const path = sharedConfigPath(gs.sharedConfig, base, env.log, id);
  if (path === undefined) return {};
  let xml: string | null;
  try {
    const r = await httpRequest(joinUrl(base, path), env, { headers: { ...WIRESERVER_HEADERS }, optional: true });
    if (r !== null && r.body.length > MAX_SHARED_CONFIG_BYTES) throw new OemError(`it is ${r.body.length} bytes, more than the ${MAX_SHARED_CONFIG_BYTES} allowed`);
    xml = r === null ? null : r.body.toString('utf8');
  } catch (err) {
    throw new OemError(`${id}: cannot get the shared configuration from the WireServer: ${describe(err)}`, { code: 'network', cause: err });
  }
  if (xml === null) {
    env.log(`${id}: the WireServer has no shared configuration (HTTP 404); no addresses from it`);
    return {};
  }
  try {
    return parseSharedConfig(xml, env.log, id);
  } catch (err) {
    throw new OemError(`${id}: ${describe(err)}`, { cause: err });
  }
}
