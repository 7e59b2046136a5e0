import { Args } from '@oclif/core';
import { OemCommand } from '../base-command.js';
import { inspectImage, type InspectReport } from '../image/inspect.js';
import { formatBytes } from '../format.js';

export default class Inspect extends OemCommand {
  static override summary = 'Show what an image holds: partition table, filesystems, generation, OEM contents.';
  static override description =
    'Reads a raw image, or a .bin.bz2/.gz/.xz/.zst by streaming it into a private sparse file. The GPT is checked ' +
    '(protective MBR, both headers and entry arrays with their CRC32s); a damaged copy that the other can stand in for ' +
    'is reported as a warning, anything else is refused with the reason.';
  static override examples = ['<%= config.bin %> inspect flatcar_production_image.bin', '<%= config.bin %> inspect flatcar_production_image.bin.bz2 --json'];
  static override enableJsonFlag = true;
  static override args = {
    image: Args.string({ description: 'raw or compressed disk image', required: true }),
  };

  async run(): Promise<InspectReport> {
    const { args } = await this.parse(Inspect);
    const report = await inspectImage(args.image);
    if (!this.jsonEnabled()) this.log(render(report));
    return report;
  }
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

export function render(r: InspectReport): string {
  const lines: string[] = [];
  lines.push(`Image:        ${r.image}${r.compression !== 'none' ? ` (${r.compression}, decompressed with ${r.decompressor})` : ''}`);
  lines.push(`Size:         ${r.size} bytes (${formatBytes(r.size)})`);
  lines.push(`Sector size:  ${r.sectorSize}`);
  lines.push(`Disk GUID:    ${r.diskGuid}`);
  const g = r.generation;
  lines.push(`Generation:   ${g.name}${g.version ? ` ${g.version}` : ''} (OEM mounted at ${g.oemMountPoint})${g.evidence.length ? `; ${g.evidence.join(', ')}` : ''}`);
  for (const w of r.warnings) lines.push(`Warning:      ${w}`);
  lines.push('');
  lines.push(['#  ', pad('label', 11), pad('role', 10), pad('first LBA', 10), pad('last LBA', 10), pad('size', 10), pad('filesystem', 22), 'type GUID / attributes'].join(' '));
  for (const p of r.partitions) {
    const fs = p.filesystem.type === 'none' ? '-' : `${p.filesystem.type}${p.filesystem.label ? ` "${p.filesystem.label}"` : ''}`;
    let attrs = p.attributes === '0x0000000000000000' ? '' : ` attrs ${p.attributes}`;
    if (p.usr && (p.usr.priority || p.usr.tries || p.usr.successful)) {
      attrs += ` (priority ${p.usr.priority}, tries ${p.usr.tries}, successful ${p.usr.successful ? 1 : 0})`;
    }
    lines.push(
      [pad(String(p.number), 3), pad(p.label, 11), pad(p.role, 10), pad(String(p.firstLba), 10), pad(String(p.lastLba), 10), pad(formatBytes(p.size), 10), pad(fs, 22), p.typeGuid + attrs].join(' '),
    );
  }
  if (r.oem) {
    lines.push('');
    if (!r.oem.readable) {
      lines.push(`OEM partition: not readable (${r.oem.error})`);
    } else {
      lines.push(`OEM partition (${r.oem.filesystem}): oem_id ${r.oem.oemId !== undefined ? `"${r.oem.oemId}"` : 'not set'}`);
      if (r.oem.oemRelease) lines.push(`  oem-release: ${Object.entries(r.oem.oemRelease).map(([k, v]) => `${k}=${v}`).join(' ')}`);
      const files = r.oem.files.filter((f) => f.path !== '/lost+found');
      if (!files.length) lines.push('  (empty)');
      for (const f of files) {
        const mode = f.mode.toString(8).padStart(4, '0');
        const what = f.type === 'symlink' ? ` -> ${f.target ?? '?'}` : f.type === 'dir' ? '/' : ` (${f.size} bytes)`;
        lines.push(`  ${mode} ${f.uid}:${f.gid} ${f.path}${what}`);
      }
    }
  }
  if (r.extensions || r.activeOem?.length) {
    lines.push('');
    lines.push(`System extensions${r.activeOem?.length ? ` (active OEM marker${r.activeOem.length === 1 ? '' : 's'}: ${r.activeOem.join(', ')})` : ''}:`);
    if (!r.extensions?.length) lines.push('  (none)');
    for (const x of r.extensions ?? []) {
      const where = `${x.partition.toUpperCase()} ${x.path}${x.target ? ` -> ${x.target}` : ''}`;
      const kind = x.disk ? `disk image (${x.disk.filesystem}${x.disk.verity ? ', dm-verity' : ''}${x.disk.signed ? ', signed' : ''})` : x.format;
      lines.push(`  ${x.name}: ${where}, ${kind}, ${x.merges ? 'merges' : 'would not merge'}: ${x.reason}`);
      if (x.release) lines.push(`    extension-release: ${Object.entries(x.release).map(([k, v]) => `${k}=${v}`).join(' ')}`);
    }
  }
  return lines.join('\n');
}
