/**
 * The VirtualBox appliance (`virtualbox`) and the Parallels bundle (`parallels`), read back with
 * independent readers: GNU tar (listing with modes and owners, extraction, and archives GNU tar
 * writes itself from the extracted files, which must be byte-identical), sha256sum, qemu-img (info,
 * check, compare), the Parallels image header read by hand, and the XML parsed: by python's
 * ElementTree when python3 is installed, always by the strict little parser below (the two must
 * agree), with namespaces resolved to the usual prefixes.
 */
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, open, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { COMPRESSIBLE, FORMATS, FORMAT_EXTENSION, artifactName, convert, type Format } from '../src/artifacts/formats.js';
import { writeTar } from '../src/artifacts/tar.js';
import { PARALLELS_BASE_SNAPSHOT } from '../src/artifacts/vm-configs.js';
import { OemError } from '../src/shared/errors.js';
import { makeDisk, qemuInfo } from './helpers/small-disks.js';

const MiB = 1024 * 1024;
const MTIME = new Date('2024-01-02T03:04:05Z');
const EPOCH = MTIME.getTime() / 1000;
const NAME = 'flatcar_production_test_image';
const SIZE = 40 * MiB;

let dir: string;
/** 40 MiB, GPT, pseudo-random data at a few places. */
let raw: string;
let n = 0;
const outPath = (format: Format) => join(dir, `out-${++n}.${FORMAT_EXTENSION[format]}`);

/** qemu-img compare exits 0 when the guest-visible contents are identical; check finds no errors. */
async function sameContents(image: string, format: string): Promise<void> {
  const r = await execa('qemu-img', ['compare', '-f', 'raw', '-F', format, raw, image], { reject: false });
  expect(r.stdout).toContain('Images are identical');
  expect(r.exitCode).toBe(0);
  expect((await execa('qemu-img', ['check', '-f', format, image], { reject: false })).exitCode).toBe(0);
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

async function extract(archive: string, gz: boolean): Promise<string> {
  const to = await mkdtemp(join(dir, 'x-'));
  await execa('tar', [gz ? '-xzf' : '-xf', archive, '-C', to]);
  return to;
}

/** `tar -tv` lines as [mode, owner, size, name]. */
async function tarListing(archive: string, gz: boolean): Promise<[string, string, number, string][]> {
  const { stdout } = await execa('tar', [gz ? '-tvzf' : '-tvf', archive]);
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const m = /^(\S+) (\S+) +(\d+) 2024-01-02 0\d:\d\d (.+)$/.exec(l);
      if (!m) throw new Error(`unexpected tar listing line ${l}`);
      return [m[1]!, m[2]!, Number(m[3]), m[4]!];
    });
}

/** What GNU tar writes for these members (no recursion) in this order, with our owner, modes and mtime. */
async function gnuTar(from: string, names: string[], format: 'gnu' | 'ustar'): Promise<Buffer> {
  const r = await execa('tar', [`--format=${format}`, '--owner=root:0', '--group=root:0', '--mode=u=rwX,go=rX', `--mtime=@${EPOCH}`, '--no-recursion', '-C', from, '-cf', '-', ...names], {
    encoding: 'buffer',
  });
  return Buffer.from(r.stdout);
}

// ---------------------------------------------------------------------------------------------
// XML

interface XNode {
  tag: string;
  attrs: Record<string, string>;
  text: string;
  children: XNode[];
}

const NS: Record<string, string> = {
  'http://schemas.dmtf.org/ovf/envelope/1': 'ovf',
  'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData': 'rasd',
  'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData': 'vssd',
  'http://www.virtualbox.org/ovf/machine': 'vbox',
  'http://www.w3.org/2001/XMLSchema-instance': 'xsi',
  'http://www.w3.org/XML/1998/namespace': 'xml',
};

/**
 * A strict parser of the XML subset these files use (declaration, comments, elements, attributes,
 * text, the predefined and numeric entities), with namespaces resolved: names become `prefix:local`
 * with the prefix of NS, `{uri}local` for other namespaces. Anything malformed throws.
 */
function parseXml(src: string): XNode {
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`XML: ${why} at offset ${i}`);
  };
  const decode = (s: string): string => {
    if (/[<]/.test(s)) fail('"<" in text or attribute');
    return s.replace(/&([^;]*);|&/g, (m, e: string | undefined) => {
      if (e === undefined) return fail('bare "&"');
      const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
      if (e in named) return named[e]!;
      if (/^#x[0-9a-fA-F]+$/.test(e)) return String.fromCodePoint(parseInt(e.slice(2), 16));
      if (/^#\d+$/.test(e)) return String.fromCodePoint(parseInt(e.slice(1), 10));
      return fail(`unknown entity ${m}`);
    });
  };
  /** The offset just after the next `end`. */
  const after = (end: string): number => {
    const at = src.indexOf(end, i);
    return at < 0 ? fail(`no ${end}`) : at + end.length;
  };
  const skipMisc = () => {
    for (;;) {
      const ws = /^\s*/.exec(src.slice(i))![0].length;
      i += ws;
      if (src.startsWith('<?', i)) i = after('?>');
      else if (src.startsWith('<!--', i)) i = after('-->');
      else return;
    }
  };
  const resolve = (qname: string, scope: Map<string, string>, isAttr: boolean): string => {
    const c = qname.indexOf(':');
    const prefix = c < 0 ? '' : qname.slice(0, c);
    const local = c < 0 ? qname : qname.slice(c + 1);
    if (!prefix && isAttr) return local;
    const uri = prefix === 'xml' ? 'http://www.w3.org/XML/1998/namespace' : scope.get(prefix);
    if (uri === undefined) return prefix ? fail(`undeclared prefix ${prefix}`) : local;
    return NS[uri] ? `${NS[uri]}:${local}` : `{${uri}}${local}`;
  };
  const element = (outer: Map<string, string>): XNode => {
    const open = /^<([A-Za-z_][\w.:-]*)/.exec(src.slice(i)) ?? fail('expected an element');
    i += open[0].length;
    const raw: [string, string][] = [];
    const attr = /\s+([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/y;
    for (;;) {
      attr.lastIndex = i;
      const m = attr.exec(src);
      if (!m) break;
      if (raw.some(([k]) => k === m[1])) fail(`duplicate attribute ${m[1]}`);
      raw.push([m[1]!, decode(m[2] ?? m[3] ?? '')]);
      i = attr.lastIndex;
    }
    const end = /^\s*(\/?)>/.exec(src.slice(i)) ?? fail('malformed start tag');
    i += end[0].length;
    const scope = new Map(outer);
    for (const [k, v] of raw) {
      if (k === 'xmlns') scope.set('', v);
      else if (k.startsWith('xmlns:')) scope.set(k.slice(6), v);
    }
    const node: XNode = { tag: resolve(open[1]!, scope, false), attrs: {}, text: '', children: [] };
    for (const [k, v] of raw) if (k !== 'xmlns' && !k.startsWith('xmlns:')) node.attrs[resolve(k, scope, true)] = v;
    if (end[1]) return node;
    let text = '';
    for (;;) {
      const lt = src.indexOf('<', i);
      if (lt < 0) fail(`unclosed element ${open[1]}`);
      text += decode(src.slice(i, lt));
      i = lt;
      if (src.startsWith('<!--', i)) {
        i = after('-->');
      } else if (src.startsWith('</', i)) {
        const close = /^<\/([A-Za-z_][\w.:-]*)\s*>/.exec(src.slice(i)) ?? fail('malformed end tag');
        if (close[1] !== open[1]) fail(`</${close[1]}> closes <${open[1]}>`);
        i += close[0].length;
        node.text = text.trim();
        return node;
      } else {
        node.children.push(element(scope));
      }
    }
  };
  skipMisc();
  const root = element(new Map());
  skipMisc();
  if (i !== src.length) fail('content after the root element');
  return root;
}

/** python3's interpreter itself when installed with ElementTree (a version manager's shim is slow to start), else undefined. */
const PYTHON = await execa('python3', ['-c', 'import sys, xml.etree.ElementTree; print(sys.executable)'], { reject: false })
  .then((r) => (r.exitCode === 0 && r.stdout.trim() ? r.stdout.trim() : undefined))
  .catch(() => undefined);

/** The file's XML tree; when python3 is installed, ElementTree's reading must be the same. */
async function readXml(path: string): Promise<XNode> {
  const text = await readFile(path, 'utf8');
  const mine = parseXml(text);
  if (PYTHON) {
    const script = [
      'import sys, json, xml.etree.ElementTree as E',
      'NS = json.loads(sys.argv[2])',
      'def name(n):',
      '    if n.startswith("{"):',
      '        uri, local = n[1:].split("}", 1)',
      '        return NS[uri] + ":" + local if uri in NS else n',
      '    return n',
      'def conv(e):',
      '    return {"tag": name(e.tag), "attrs": {name(k): v for k, v in e.attrib.items()}, "text": (e.text or "").strip(), "children": [conv(c) for c in e]}',
      'print(json.dumps(conv(E.parse(sys.argv[1]).getroot())))',
    ].join('\n');
    const { stdout } = await execa(PYTHON, ['-c', script, path, JSON.stringify(NS)]);
    expect(mine).toEqual(JSON.parse(stdout));
  }
  return mine;
}

function kids(node: XNode, tag: string): XNode[] {
  return node.children.filter((c) => c.tag === tag);
}

/** The one element at this path of tags ('a/b/c') below `node`. */
function at(node: XNode, path: string): XNode {
  let cur = node;
  for (const tag of path.split('/')) {
    const found = kids(cur, tag);
    expect(found, `${path}: ${tag}`).toHaveLength(1);
    cur = found[0]!;
  }
  return cur;
}

const text = (node: XNode, path: string) => at(node, path).text;

// ---------------------------------------------------------------------------------------------

const done = new Map<Format, Promise<string>>();
/** Converts once per format and remembers the output. */
function converted(format: 'virtualbox' | 'parallels'): Promise<string> {
  let out = done.get(format);
  if (!out) {
    const path = outPath(format);
    out = convert(raw, format, path, { name: NAME, mtime: MTIME }).then(() => path);
    done.set(format, out);
  }
  return out;
}

const extracted = new Map<Format, Promise<string>>();
/** The output of `converted`, extracted once. */
function extractedOf(format: 'virtualbox' | 'parallels'): Promise<string> {
  let x = extracted.get(format);
  if (!x) {
    x = converted(format).then((out) => extract(out, format === 'parallels'));
    extracted.set(format, x);
  }
  return x;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oem-bundles-'));
  raw = join(dir, 'disk.bin');
  await makeDisk(raw, SIZE, [
    [MiB, 64 * 1024],
    [20 * MiB, 256 * 1024],
    [24 * MiB, 1536 * 1024],
    [39 * MiB, 4096],
  ]);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('names', () => {
  it('virtualbox is a .virtualbox.ova, parallels a .pvm.tgz; no two formats share a name; neither is compressed again', () => {
    expect(FORMATS).toContain('virtualbox');
    expect(FORMATS).toContain('parallels');
    expect(artifactName('flatcar', 'virtualbox', 'virtualbox')).toBe('flatcar_production_virtualbox_image.virtualbox.ova');
    expect(artifactName('flatcar', 'parallels', 'parallels')).toBe('flatcar_production_parallels_image.pvm.tgz');
    const names = FORMATS.map((f) => artifactName('flatcar', 'vagrant', f));
    expect(new Set(names).size).toBe(FORMATS.length);
    expect(COMPRESSIBLE.virtualbox).toBe(false);
    expect(COMPRESSIBLE.parallels).toBe(false);
  });
});

describe('virtualbox: an OVA of a VirtualBox VM (IDE, NAT, 2 CPUs, 1024 MiB)', () => {
  const members = [`${NAME}.ovf`, `${NAME}-disk1.vmdk`, `${NAME}.mf`];

  it('ustar with the .ovf first, then the disk, then the manifest, as GNU tar writes them', async () => {
    const out = await converted('virtualbox');
    const listing = await tarListing(out, false);
    expect(listing.map((l) => l[3])).toEqual(members);
    expect(listing.every(([mode, owner]) => mode === '-rw-r--r--' && owner === 'root/root')).toBe(true);
    const bytes = await readFile(out);
    expect(bytes.toString('latin1', 257, 265)).toBe('ustar\u000000'); // POSIX magic and version
    const x = await extractedOf('virtualbox');
    expect((await readdir(x)).sort()).toEqual([...members].sort());
    expect(bytes.equals(await gnuTar(x, members, 'ustar'))).toBe(true);
  });

  it('the manifest: SHA256 lines for the .ovf and the disk that sha256sum agrees with', async () => {
    const x = await extractedOf('virtualbox');
    const { stdout } = await execa('sha256sum', [members[0]!, members[1]!], { cwd: x });
    const expected = stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [hash, file] = l.split(/\s+\*?/);
        return `SHA256(${file})= ${hash}`;
      });
    expect(await readFile(join(x, members[2]!), 'utf8')).toBe(`${expected.join('\n')}\n`);
  });

  it('the disk: a streamOptimized VMDK for an IDE adapter, named as the OVF says, same contents as the raw image', async () => {
    const x = await extractedOf('virtualbox');
    const disk = join(x, members[1]!);
    const info = await qemuInfo(disk, 'vmdk');
    expect(info.format).toBe('vmdk');
    expect(info['virtual-size']).toBe(SIZE);
    expect((info['format-specific'] as { data: { 'create-type': string } }).data['create-type']).toBe('streamOptimized');
    await sameContents(disk, 'vmdk');
    const descriptor = (await readFile(disk)).subarray(512, 2048).toString('latin1');
    expect(descriptor).toContain('ddb.adapterType = "ide"');
    expect(descriptor).toContain(`SPARSE "${members[1]}"`);
  });

  it('the OVF: the file, the disk (capacity = the raw size), the hardware items and the vbox:Machine agree', async () => {
    const x = await extractedOf('virtualbox');
    const env = await readXml(join(x, members[0]!));
    expect(env.tag).toBe('ovf:Envelope');
    expect(env.attrs['ovf:version']).toBe('1.0');

    const file = at(env, 'ovf:References/ovf:File');
    expect(file.attrs['ovf:href']).toBe(members[1]);
    expect(Number(file.attrs['ovf:size'])).toBe((await stat(join(x, members[1]!))).size);
    const disk = at(env, 'ovf:DiskSection/ovf:Disk');
    expect(disk.attrs['ovf:fileRef']).toBe(file.attrs['ovf:id']);
    expect(Number(disk.attrs['ovf:capacity'])).toBe(SIZE);
    expect(disk.attrs['ovf:format']).toBe('http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized');
    const diskUuid = disk.attrs['vbox:uuid']!;
    expect(diskUuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(at(env, 'ovf:NetworkSection/ovf:Network').attrs['ovf:name']).toBe('NAT');

    const vs = at(env, 'ovf:VirtualSystem');
    expect(vs.attrs['ovf:id']).toBe(NAME);
    expect(at(vs, 'ovf:OperatingSystemSection').attrs['ovf:id']).toBe('100'); // CIM: Linux 2.6.x 64-Bit
    expect(text(vs, 'ovf:OperatingSystemSection/vbox:OSType')).toBe('Linux26_64');
    const hw = at(vs, 'ovf:VirtualHardwareSection');
    expect(text(hw, 'ovf:System/vssd:VirtualSystemType')).toBe('virtualbox-2.2');
    const items = kids(hw, 'ovf:Item').map((it) => Object.fromEntries(it.children.map((c) => [c.tag.replace(/^rasd:/, ''), c.text])));
    const byType = (t: string) => items.filter((it) => it.ResourceType === t);
    expect(byType('3')).toEqual([expect.objectContaining({ VirtualQuantity: '2' })]);
    expect(byType('4')).toEqual([expect.objectContaining({ VirtualQuantity: '1024', AllocationUnits: 'byte * 2^20' })]);
    const ide = byType('5');
    expect(ide.map((c) => [c.Address, c.ResourceSubType])).toEqual([
      ['0', 'PIIX4'],
      ['1', 'PIIX4'],
    ]);
    expect(byType('10')).toEqual([expect.objectContaining({ Connection: 'NAT', ResourceSubType: 'E1000' })]);
    const [diskItem] = byType('17');
    expect(byType('17')).toHaveLength(1);
    expect(diskItem!.HostResource).toBe(`/disk/${disk.attrs['ovf:diskId']}`);
    expect(diskItem!.Parent).toBe(ide[0]!.InstanceID); // primary IDE channel, master
    expect(diskItem!.AddressOnParent).toBe('0');
    expect(new Set(items.map((it) => it.InstanceID)).size).toBe(items.length);

    const m = at(vs, 'vbox:Machine');
    expect(m.attrs).toMatchObject({ 'ovf:required': 'false', version: '1.16-linux', name: NAME, OSType: 'Linux26_64', lastStateChange: '2024-01-02T03:04:05Z' });
    expect(m.attrs.uuid).toMatch(/^\{[0-9a-f-]{36}\}$/);
    expect(m.attrs.uuid).not.toBe(`{${diskUuid}}`);
    expect(at(m, 'ovf:Hardware/ovf:CPU').attrs.count).toBe('2');
    expect(at(m, 'ovf:Hardware/ovf:Memory').attrs.RAMSize).toBe('1024');
    expect(at(m, 'ovf:Hardware/ovf:BIOS/ovf:IOAPIC').attrs.enabled).toBe('true'); // needed for 2 CPUs
    expect(kids(at(m, 'ovf:Hardware/ovf:Boot'), 'ovf:Order')[0]!.attrs).toEqual({ position: '1', device: 'HardDisk' });
    const adapter = at(m, 'ovf:Hardware/ovf:Network/ovf:Adapter');
    expect(adapter.attrs).toMatchObject({ slot: '0', enabled: 'true', type: '82540EM' });
    expect(adapter.attrs.MACAddress).toMatch(/^080027[0-9A-F]{6}$/);
    expect(kids(adapter, 'ovf:NAT')).toHaveLength(1);
    const controller = at(m, 'ovf:StorageControllers/ovf:StorageController');
    expect(controller.attrs).toMatchObject({ type: 'PIIX4', PortCount: '2', Bootable: 'true' });
    const attached = at(controller, 'ovf:AttachedDevice');
    expect(attached.attrs).toMatchObject({ type: 'HardDisk', port: '0', device: '0' });
    expect(at(attached, 'ovf:Image').attrs.uuid).toBe(`{${diskUuid}}`);
  });
});

describe('parallels: a gzip\'d tar of a .pvm bundle', () => {
  const pvm = `${NAME}.pvm`;
  const hdd = `${NAME}.hdd`;
  const data = `${hdd}.0.${PARALLELS_BASE_SNAPSHOT}.hds`;
  const members = [pvm, `${pvm}/config.pvs`, `${pvm}/${hdd}`, `${pvm}/${hdd}/DiskDescriptor.xml`, `${pvm}/${hdd}/${hdd}`, `${pvm}/${hdd}/${data}`];

  it('GNU tar, gzip without name or time: the bundle directory, config.pvs, the hdd directory and its files, as GNU tar writes them', async () => {
    const out = await converted('parallels');
    const listing = await tarListing(out, true);
    expect(listing.map((l) => l[3])).toEqual([`${pvm}/`, `${pvm}/config.pvs`, `${pvm}/${hdd}/`, `${pvm}/${hdd}/DiskDescriptor.xml`, `${pvm}/${hdd}/${hdd}`, `${pvm}/${hdd}/${data}`]);
    expect(listing.map((l) => l[0])).toEqual(['drwxr-xr-x', '-rw-r--r--', 'drwxr-xr-x', '-rw-r--r--', '-rw-r--r--', '-rw-r--r--']);
    expect(listing.every((l) => l[1] === 'root/root')).toBe(true);
    expect(listing[4]![2]).toBe(0); // the empty file named as the disk
    const gz = await readFile(out);
    expect([...gz.subarray(0, 4)]).toEqual([0x1f, 0x8b, 8, 0]);
    expect(gz.readUInt32LE(4)).toBe(0);
    const tar = gunzipSync(gz);
    expect(tar.toString('latin1', 257, 265)).toBe('ustar  \0'); // GNU magic
    const x = await extractedOf('parallels');
    expect(await readdir(x)).toEqual([pvm]);
    expect(tar.equals(await gnuTar(x, members, 'gnu'))).toBe(true);
  });

  it('the disk: a Parallels image of the raw image\'s size and contents, whose header agrees with DiskDescriptor.xml', async () => {
    const x = await extractedOf('parallels');
    const hddDir = join(x, pvm, hdd);
    expect((await readdir(hddDir)).sort()).toEqual(['DiskDescriptor.xml', hdd, data].sort());
    const image = join(hddDir, data);
    const info = await qemuInfo(image, 'parallels');
    expect(info.format).toBe('parallels');
    expect(info['virtual-size']).toBe(SIZE);
    await sameContents(image, 'parallels');
    // The header, read by hand (qemu's block/parallels.c layout).
    const h = Buffer.alloc(64);
    const fh = await open(image, 'r');
    await fh.read(h, 0, 64, 0);
    await fh.close();
    expect(h.toString('latin1', 0, 16)).toBe('WithouFreSpacExt');
    const header = { version: h.readUInt32LE(16), heads: h.readUInt32LE(20), cylinders: h.readUInt32LE(24), tracks: h.readUInt32LE(28), sectors: Number(h.readBigUInt64LE(36)), inuse: h.readUInt32LE(44) };
    expect(header).toEqual({ version: 2, heads: 16, cylinders: SIZE / 512 / 512, tracks: 2048, sectors: SIZE / 512, inuse: 0 });

    const d = await readXml(join(hddDir, 'DiskDescriptor.xml'));
    expect(d.tag).toBe('Parallels_disk_image');
    expect(d.attrs.Version).toBe('1.0');
    const p = at(d, 'Disk_Parameters');
    expect(Number(text(p, 'Disk_size')) * 512).toBe(SIZE);
    expect(Number(text(p, 'Cylinders'))).toBe(header.cylinders);
    expect(Number(text(p, 'Heads'))).toBe(16);
    expect(Number(text(p, 'Sectors'))).toBe(32);
    expect(Number(text(p, 'Cylinders')) * 16 * 32 * 512).toBe(SIZE);
    expect(text(p, 'Padding')).toBe('0');
    expect(text(p, 'UID')).toMatch(/^\{[0-9a-f-]{36}\}$/);
    const storage = at(d, 'StorageData/Storage');
    expect(text(storage, 'Start')).toBe('0');
    expect(Number(text(storage, 'End')) * 512).toBe(SIZE);
    expect(Number(text(storage, 'Blocksize'))).toBe(header.tracks);
    expect(text(storage, 'Image/Type')).toBe('Compressed');
    expect(text(storage, 'Image/File')).toBe(data);
    expect(text(storage, 'Image/GUID')).toBe(PARALLELS_BASE_SNAPSHOT);
    const shot = at(d, 'Snapshots/Shot');
    expect(text(shot, 'GUID')).toBe(PARALLELS_BASE_SNAPSHOT);
    expect(text(shot, 'ParentGUID')).toBe('{00000000-0000-0000-0000-000000000000}');
  });

  it('config.pvs: a Linux VM with 2 CPUs, 1024 MiB, booting the bundle\'s hard disk on SATA, one adapter on Shared Networking (NAT)', async () => {
    const x = await extractedOf('parallels');
    const vm = await readXml(join(x, pvm, 'config.pvs'));
    expect(vm.tag).toBe('ParallelsVirtualMachine');
    expect(vm.attrs.schemaVersion).toBe('1.0');
    // Every element the Parallels XML model (libprlxmlmodel VmConfig.xsd) requires of the sections written.
    const required: Record<string, string[]> = {
      '.': ['AppVersion'],
      Identification: ['VmUuid', 'VmName', 'ServerUuid', 'ServerHost'],
      'Settings/General': ['OsType', 'OsNumber', 'IsTemplate'],
      'Settings/Startup': ['AutoStart', 'WindowMode'],
      'Settings/Startup/BootingOrder/BootDevice': ['Index', 'Type', 'BootingNumber', 'InUse'],
      'Hardware/Cpu': ['Number', 'Mode', 'AccelerationLevel', 'EnableVTxSupport'],
      'Hardware/Memory': ['RAM'],
      'Hardware/Hdd': ['Index', 'Enabled', 'Connected', 'EmulatedType', 'SystemName', 'UserFriendlyName', 'Remote', 'InterfaceType', 'StackIndex', 'DiskType', 'Size', 'SizeOnDisk', 'Passthrough', 'Splitted'],
      'Hardware/NetworkAdapter': ['Index', 'Enabled', 'Connected', 'EmulatedType', 'SystemName', 'UserFriendlyName', 'Remote', 'AdapterNumber', 'AdapterName'],
    };
    for (const [section, tags] of Object.entries(required)) {
      const s = section === '.' ? vm : at(vm, section);
      for (const tag of tags) expect(kids(s, tag), `${section}/${tag}`).toHaveLength(1);
    }
    expect(text(vm, 'Identification/VmName')).toBe(NAME);
    expect(text(vm, 'Identification/VmUuid')).toMatch(/^\{[0-9a-f-]{36}\}$/);
    expect(text(vm, 'Identification/VmCreationDate')).toBe('2024-01-02 03:04:05');
    expect(text(vm, 'Settings/General/OsType')).toBe('9'); // PVS_GUEST_TYPE_LINUX
    expect(text(vm, 'Settings/General/OsNumber')).toBe(String(0x0905)); // PVS_GUEST_VER_LIN_KRNL_26
    expect(text(vm, 'Hardware/Cpu/Number')).toBe('2');
    expect(text(vm, 'Hardware/Cpu/Mode')).toBe('1'); // PCM_CPU_MODE_64
    expect(text(vm, 'Hardware/Memory/RAM')).toBe('1024');

    const disk = at(vm, 'Hardware/Hdd');
    expect(text(disk, 'SystemName')).toBe(hdd);
    expect((await stat(join(x, pvm, text(disk, 'SystemName')))).isDirectory()).toBe(true);
    expect(text(disk, 'EmulatedType')).toBe('1'); // an image file
    expect(text(disk, 'InterfaceType')).toBe('2'); // SATA
    expect(text(disk, 'DiskType')).toBe('1'); // expanding
    expect(Number(text(disk, 'Size'))).toBe(SIZE / MiB);
    expect(Number(text(disk, 'SizeInBytes'))).toBe(SIZE);
    expect(Number(text(disk, 'SizeOnDisk'))).toBe(Math.ceil((await stat(join(x, pvm, hdd, data))).size / MiB));
    const boot = at(vm, 'Settings/Startup/BootingOrder/BootDevice');
    expect(text(boot, 'Type')).toBe('6'); // PDE_HARD_DISK
    expect(text(boot, 'Index')).toBe(text(disk, 'Index'));
    expect(text(boot, 'InUse')).toBe('1');
    expect(text(vm, 'Settings/Startup/Bios/EfiEnabled')).toBe('0');

    const nic = at(vm, 'Hardware/NetworkAdapter');
    expect(text(nic, 'EmulatedType')).toBe('1'); // PNA_SHARED
    expect(text(nic, 'AdapterType')).toBe('3'); // PNT_VIRTIO
    expect(text(nic, 'MAC')).toMatch(/^001C42[0-9A-F]{6}$/);
    const uuids = [text(vm, 'Identification/VmUuid'), text(disk, 'Uuid')];
    expect(new Set(uuids).size).toBe(2);
  });
});

describe('reproducibility', () => {
  it('converting twice (a second apart) gives the same bytes; another mtime gives other bytes', async () => {
    const formats = ['virtualbox', 'parallels'] as const;
    const run = (f: Format, mtime: Date) => {
      const out = outPath(f);
      return convert(raw, f, out, { name: NAME, mtime }).then(() => sha256(out));
    };
    const first = await Promise.all(formats.map((f) => converted(f).then(sha256)));
    const later = Promise.all(formats.map((f) => run(f, new Date(MTIME.getTime() + 86_400_000))));
    await new Promise((r) => setTimeout(r, 1100)); // a second later: anything clock-dependent would differ
    const again = await Promise.all(formats.map((f) => run(f, MTIME)));
    expect(again).toEqual(first);
    for (const [i, sum] of (await later).entries()) expect(sum, formats[i]).not.toBe(first[i]);
  });
});

describe('failures leave nothing under the output name', () => {
  /**
   * A directory to be the whole PATH: the tools the conversions run (qemu-img, tar, and head for the
   * scripts), each either linked to the real one, replaced by a script (which gets the real tool as
   * $REAL), or left out (null).
   */
  async function toolsPath(replace: Record<string, string | null>): Promise<string> {
    const bin = await mkdtemp(join(dir, 'bin-'));
    for (const t of ['qemu-img', 'tar', 'head']) {
      const { stdout } = await execa('sh', ['-c', `command -v ${t}`]);
      const script = replace[t];
      if (script === null) continue;
      if (script === undefined) {
        await symlink(stdout.trim(), join(bin, t));
      } else {
        await writeFile(join(bin, t), `#!/bin/sh\nREAL=${stdout.trim()}\n${script}\n`);
        await chmod(join(bin, t), 0o755);
      }
    }
    return bin;
  }

  async function withPath<T>(bin: string, f: (m: typeof import('../src/artifacts/formats.js')) => Promise<T>): Promise<T> {
    const saved = process.env.PATH;
    process.env.PATH = bin;
    try {
      vi.resetModules(); // a fresh tools.js: its which() cache has seen the real tools
      return await f(await import('../src/artifacts/formats.js'));
    } finally {
      process.env.PATH = saved;
      vi.resetModules();
    }
  }

  const cases: [what: string, replace: Record<string, string | null>][] = [
    // qemu-img writes part of its output, then fails (converting, or creating the VMDK that vmdk.ts
    // fills), or fails to read back the Parallels disk parallels.ts wrote.
    [
      'qemu-img fails mid-conversion',
      {
        'qemu-img':
          'case "$1" in\n  convert) for a; do last=$a; done; head -c 65536 /dev/zero > "$last"; echo "qemu-img: write failed" >&2; exit 1 ;;\n' +
          '  create) for a; do prev=$last; last=$a; done; head -c 512 /dev/zero > "$prev"; echo "qemu-img: write failed" >&2; exit 1 ;;\n' +
          '  info) echo "qemu-img: read failed" >&2; exit 1 ;;\nesac\nexec "$REAL" "$@"',
      },
    ],
    // tar writes part of the archive, then fails.
    ['tar fails mid-archive', { tar: 'head -c 100000 /dev/zero; echo "tar: member: Cannot stat" >&2; exit 2' }],
    ['qemu-img is missing', { 'qemu-img': null }],
  ];
  for (const [what, replace] of cases) {
    it(`${what}: an OemError, and neither the output nor the work directory remains`, async () => {
      const bin = await toolsPath(replace);
      await withPath(bin, async (fresh) => {
        for (const format of ['virtualbox', 'parallels'] as const) {
          const sub = await mkdtemp(join(dir, 'fail-'));
          const out = join(sub, `out.${FORMAT_EXTENSION[format]}`);
          const err = await fresh.convert(raw, format, out, { name: NAME, mtime: MTIME }).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(err, `${what}: ${format}`).toMatchObject({ name: 'OemError' });
          if (what === 'qemu-img is missing') expect(err).toMatchObject({ code: 'missingTool' });
          else expect((err as OemError).message).toMatch(what.startsWith('tar') ? /tar failed/ : /qemu-img failed/);
          expect(await readdir(sub), `${what}: ${format}`).toEqual([]);
        }
      });
    });
  }

  it('an unwritable output directory: an error, nothing written [as root: a read-only bind mount]', async () => {
    const sub = await mkdtemp(join(dir, 'ro-'));
    // Root writes through a mode of 0555: as root the directory is made read-only by a bind mount.
    const root = process.getuid?.() === 0;
    if (root) {
      await execa('mount', ['--bind', sub, sub]);
      await execa('mount', ['-o', 'remount,bind,ro', sub]);
    } else {
      await chmod(sub, 0o555);
    }
    try {
      for (const format of ['virtualbox', 'parallels'] as const) {
        await expect(convert(raw, format, join(sub, `out.${FORMAT_EXTENSION[format]}`), { name: NAME, mtime: MTIME })).rejects.toBeInstanceOf(OemError);
      }
      expect(await readdir(sub)).toEqual([]);
    } finally {
      if (root) await execa('umount', [sub]);
      else await chmod(sub, 0o755);
    }
  });

  // An aborted conversion and a full file system for each bundle: with the other formats' in formats.test.ts.

  it('refuses an existing output and leaves it alone', async () => {
    for (const format of ['virtualbox', 'parallels'] as const) {
      const out = outPath(format);
      await writeFile(out, 'keep');
      await expect(convert(raw, format, out, { name: NAME, mtime: MTIME })).rejects.toBeInstanceOf(OemError);
      expect(await readFile(out, 'utf8')).toBe('keep');
    }
  });
});

describe('tree archives (tar.ts)', () => {
  it('refuses member names that are not a clean relative tree, and a member before its directory', async () => {
    for (const entries of [
      [{ name: '/abs', dir: true as const }],
      [{ name: 'a/../b', dir: true as const }],
      [{ name: 'a//b', dir: true as const }],
      [{ name: 'a/', dir: true as const }],
      [{ name: 'a/b', data: Buffer.from('x') }],
      [
        { name: 'a', dir: true as const },
        { name: 'a', dir: true as const },
      ],
    ]) {
      const stage = join(dir, `stage-${++n}`);
      await expect(writeTar(join(dir, `t-${n}.tar`), entries, { format: 'gnu', gzip: false, mtime: EPOCH, stage }), JSON.stringify(entries)).rejects.toMatchObject({ code: 'usage' });
    }
  });
});
