/**
 * Azure: the provisioning DVD (mounted at env.azureDvd under the root by a unit) holds
 * `ovf-env.xml`, the OVF environment Azure writes for Linux VMs:
 *
 *   <ns0:Environment xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1"
 *                    xmlns:ns1="http://schemas.microsoft.com/windowsazure">
 *     <ns1:ProvisioningSection>
 *       <ns1:LinuxProvisioningConfigurationSet>
 *         <ns1:HostName>...</ns1:HostName>
 *         <ns1:CustomData>base64</ns1:CustomData>
 *         <ns1:SSH><ns1:PublicKeys><ns1:PublicKey>
 *           <ns1:Fingerprint/><ns1:Path/><ns1:Value>ssh-rsa ...</ns1:Value>
 *         </ns1:PublicKey></ns1:PublicKeys></ns1:SSH>
 *
 * HostName gives the hostname, CustomData (base64) the userdata, and PublicKey/Value the SSH keys
 * when Azure put the key text there (often it gives only a fingerprint of a certificate: then no
 * keys). Elements are matched by namespace (any prefix) and local name. The XML is read by a small
 * strict scanner: no DOCTYPE, no entity declarations, only the predefined and numeric character
 * references, balanced tags; anything else is an error.
 */
import { OemError } from '../../src/shared/errors.js';
import { decodeBase64, MAX_ENVELOPE_BYTES, readFileBelow, userdataOrNull } from './local-io.js';
import type { Metadata, MetadataProvider, ProviderEnv, Userdata } from './types.js';
import { cleanHostname, cleanSshKeys } from './values.js';

const AZURE_NS = 'http://schemas.microsoft.com/windowsazure';
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

class XmlError extends Error {}

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

/** The Azure-namespace children of `el` named `local`. */
function kids(el: XmlElement | undefined, local: string): XmlElement[] {
  return el ? el.children.filter((c) => c.ns === AZURE_NS && c.local === local) : [];
}

function first(el: XmlElement | undefined, ...path: string[]): XmlElement | undefined {
  let cur = el;
  for (const p of path) cur = kids(cur, p)[0];
  return cur;
}

export interface OvfEnv {
  hostname?: string;
  customData?: string;
  /** PublicKey/Value texts (keys given by value). */
  publicKeys: string[];
}

/** The parts of an ovf-env.xml this provider uses; throws an OemError for malformed documents. */
export function parseOvfEnv(xml: string): OvfEnv {
  let root: XmlElement;
  try {
    root = parseXml(xml);
  } catch (err) {
    if (err instanceof XmlError) throw new OemError(`ovf-env.xml is not valid XML: ${err.message}`);
    throw err;
  }
  if (root.local !== 'Environment') throw new OemError(`ovf-env.xml: the root element is <${root.local}>, not an OVF <Environment>`);
  const section = kids(root, 'ProvisioningSection')[0];
  const set = kids(section, 'LinuxProvisioningConfigurationSet')[0];
  const out: OvfEnv = { publicKeys: [] };
  if (!set) return out;
  const host = first(set, 'HostName');
  if (host) out.hostname = host.text;
  const custom = first(set, 'CustomData');
  if (custom) out.customData = custom.text;
  for (const pk of kids(first(set, 'SSH', 'PublicKeys'), 'PublicKey')) {
    const value = first(pk, 'Value');
    if (value && value.text.trim() !== '') out.publicKeys.push(value.text);
  }
  return out;
}

async function readOvfEnv(env: ProviderEnv): Promise<OvfEnv | null> {
  const buf = await readFileBelow(env, env.azureDvd, 'ovf-env.xml', MAX_ENVELOPE_BYTES);
  if (buf === null) {
    env.log(`azure: no ovf-env.xml in ${env.azureDvd}`);
    return null;
  }
  return parseOvfEnv(buf.toString('utf8'));
}

export const provider: MetadataProvider = {
  id: 'azure',

  async metadata(env: ProviderEnv): Promise<Metadata> {
    const ovf = await readOvfEnv(env);
    const md: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
    if (ovf === null) return md;
    const hostname = cleanHostname(ovf.hostname?.trim(), env.log, 'the ovf-env.xml HostName');
    if (hostname !== undefined) {
      md.hostname = hostname;
      md.attributes.COREOS_HOSTNAME = hostname;
    }
    md.sshKeys = cleanSshKeys(ovf.publicKeys, env.log, 'ovf-env.xml');
    return md;
  },

  async userdata(env: ProviderEnv): Promise<Userdata> {
    const ovf = await readOvfEnv(env);
    if (ovf?.customData === undefined) return null;
    return userdataOrNull(decodeBase64(ovf.customData, 'the ovf-env.xml CustomData'), 'the ovf-env.xml CustomData');
  },
};
