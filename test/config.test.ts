/**
 * The provisioning config validator (src/shared/config/validate.ts): valid configs (every feature, the
 * example of types.ts, JSON), one or more negative cases per rule as a data table, positions and
 * formatting, all problems at once, warnings-only configs, and reading files.
 */
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem, type AgentConfig, type Problem } from '../src/shared/config/types.js';
import { MAX_CONFIG_BYTES, readAndValidateConfig, validateConfig } from '../src/shared/config/validate.js';
import { oem } from './helpers/cli.js';

// A real public key (from test/ssh-keys.test.ts).
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz/nirY09uAuYtaLzkukGx70zg/7N+Yf5/f alice@laptop';
const SHA = 'ab'.repeat(64);
const HASH = '$6$rounds=5000$saltsalt$Xj3r6hR6Vn0m9Iq1s5fWcQ0m8b0lK3mM9r2q5tq4b2aU9o4Q1ZcTq1m0Vw2rQk5v6Zs1s8Qx0fX8e5Pp2r0Rk/';

/**
 * YAML test data: a raw template literal (backslash escapes reach the YAML parser as written) without
 * its first newline and common indentation.
 */
function y(strings: TemplateStringsArray, ...values: unknown[]): string {
  const text = String.raw({ raw: strings.raw }, ...values).replace(/^\n/, '');
  const lines = text.split('\n');
  const indents = lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)?.[0].length ?? 0);
  const min = Math.min(...indents);
  return lines.map((l) => l.slice(min)).join('\n').replace(/[ ]+$/, '');
}

function errors(problems: Problem[]): Problem[] {
  return problems.filter((p) => p.severity === 'error');
}

// ---------------------------------------------------------------------------------------------
// Valid configs

const FULL = y`
  version: 1
  groups:
    - name: ops
      gid: 1500
      system: false
      password_hash: "!"
    - name: builders
  users:
    - name: ops
      uid: 1500
      password_hash: "${HASH}"
      ssh_authorized_keys: ["${KEY}"]
      home_dir: /home/ops
      groups: [docker, sudo, builders, ci]
      primary_group: ops
      system: false
      no_user_group: true
      no_create_home: false
      no_log_init: true
      gecos: Operations
      shell: /bin/bash
    - name: ci
      home_dir: /
      password_hash: "*"
  storage:
    disks:
      - device: /dev/sdb
        wipe_table: true
        partitions:
          - { number: 1, label: DATA, start_mib: 0, size_mib: 1024, type_guid: 0FC63DAF-8483-4772-8E79-3D69D8477DE4, guid: 5e0f3a2c-1b7d-4c39-9f0a-6d2e8b1c4a77 }
          - { number: 2, label: SWAP, size_mib: 512 }
          - { label: REST }
      - device: /dev/disk/by-id/virtio-data2
    raid:
      - name: data
        level: raid1
        devices: [/dev/sdc, /dev/sdd, /dev/sde]
        spares: 1
    volume_groups:
      - name: vg0
        devices: [/dev/md/data]
        logical_volumes:
          - { name: lv_data, size_mib: 2048 }
          - { name: rest }
    filesystems:
      - device: /dev/disk/by-partlabel/DATA
        format: ext4
        label: DATA
        uuid: 2f0c7bd8-6e4d-4bd0-a6a8-2e1b4f0f3c11
        force: true
        options: ["-E", "lazy_itable_init=1"]
        mount: { path: /var/lib/data, options: [noatime] }
      - device: /dev/vg0/lv_data
        format: xfs
        label: XFSDATA
        mount: { path: /srv }
      - device: /dev/vg0/rest
        format: btrfs
      - device: /dev/sdb3
        format: vfat
        label: EFI
        uuid: ABCD-1234
      - device: /dev/disk/by-partlabel/SWAP
        format: swap
        label: swap0
  files:
    - path: /etc/motd
      content: "hello\n"
      mode: "0644"
      owner: root
      group: 0
      overwrite: false
    - path: /opt/bin/tool
      source: https://example.com/tool
      sha512: ${SHA}
      mode: "755"
    - path: /etc/blob
      content_base64: |
        aGVsbG8g
        d29ybGQ=
      owner: 1500
      group: "1500"
  directories:
    - path: /var/lib/app
      mode: "2775"
      owner: ops
      group: builders
  links:
    - path: /etc/localtime
      target: ../usr/share/zoneinfo/UTC
    - path: /opt/bin/tool2
      target: /opt/bin/tool
      hard: true
      owner: ops
      group: ops
  systemd:
    units:
      - name: hello.service
        enable: true
        content: |
          [Unit]
          Description=Hello
          [Service]
          ExecStart=/usr/bin/echo hello
          [Install]
          WantedBy=multi-user.target
        dropins:
          - name: 10-env.conf
            content: |
              [Service]
              Environment=A=1
      - name: locksmithd.service
        mask: true
      - name: docker.socket
        enable: true
  networkd:
    units:
      - name: 10-eth0.network
        content: |
          [Match]
          Name=eth0
          [Network]
          DHCP=yes
      - name: 20-br0.netdev
        content: |
          [NetDev]
          Name=br0
          Kind=bridge
      - name: 30-eth.link
        content: |
          [Match]
          OriginalName=eth*
          [Link]
          NamePolicy=kernel
`;

const FULL_EXPECTED: AgentConfig = {
  version: 1,
  groups: [{ name: 'ops', gid: 1500, system: false, password_hash: '!' }, { name: 'builders' }],
  users: [
    {
      name: 'ops',
      uid: 1500,
      password_hash: HASH,
      ssh_authorized_keys: [KEY],
      home_dir: '/home/ops',
      groups: ['docker', 'sudo', 'builders', 'ci'],
      primary_group: 'ops',
      system: false,
      no_user_group: true,
      no_create_home: false,
      no_log_init: true,
      gecos: 'Operations',
      shell: '/bin/bash',
    },
    { name: 'ci', home_dir: '/', password_hash: '*' },
  ],
  storage: {
    disks: [
      {
        device: '/dev/sdb',
        wipe_table: true,
        partitions: [
          { number: 1, label: 'DATA', start_mib: 0, size_mib: 1024, type_guid: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', guid: '5e0f3a2c-1b7d-4c39-9f0a-6d2e8b1c4a77' },
          { number: 2, label: 'SWAP', size_mib: 512 },
          { label: 'REST' },
        ],
      },
      { device: '/dev/disk/by-id/virtio-data2' },
    ],
    raid: [{ name: 'data', level: 'raid1', devices: ['/dev/sdc', '/dev/sdd', '/dev/sde'], spares: 1 }],
    volume_groups: [{ name: 'vg0', devices: ['/dev/md/data'], logical_volumes: [{ name: 'lv_data', size_mib: 2048 }, { name: 'rest' }] }],
    filesystems: [
      {
        device: '/dev/disk/by-partlabel/DATA',
        format: 'ext4',
        label: 'DATA',
        uuid: '2f0c7bd8-6e4d-4bd0-a6a8-2e1b4f0f3c11',
        force: true,
        options: ['-E', 'lazy_itable_init=1'],
        mount: { path: '/var/lib/data', options: ['noatime'] },
      },
      { device: '/dev/vg0/lv_data', format: 'xfs', label: 'XFSDATA', mount: { path: '/srv' } },
      { device: '/dev/vg0/rest', format: 'btrfs' },
      { device: '/dev/sdb3', format: 'vfat', label: 'EFI', uuid: 'ABCD-1234' },
      { device: '/dev/disk/by-partlabel/SWAP', format: 'swap', label: 'swap0' },
    ],
  },
  files: [
    { path: '/etc/motd', content: 'hello\n', mode: '0644', owner: 'root', group: 0, overwrite: false },
    { path: '/opt/bin/tool', source: 'https://example.com/tool', sha512: SHA, mode: '755' },
    { path: '/etc/blob', content_base64: 'aGVsbG8gd29ybGQ=', owner: 1500, group: '1500' },
  ],
  directories: [{ path: '/var/lib/app', mode: '2775', owner: 'ops', group: 'builders' }],
  links: [
    { path: '/etc/localtime', target: '../usr/share/zoneinfo/UTC' },
    { path: '/opt/bin/tool2', target: '/opt/bin/tool', hard: true, owner: 'ops', group: 'ops' },
  ],
  systemd: {
    units: [
      {
        name: 'hello.service',
        enable: true,
        content: '[Unit]\nDescription=Hello\n[Service]\nExecStart=/usr/bin/echo hello\n[Install]\nWantedBy=multi-user.target\n',
        dropins: [{ name: '10-env.conf', content: '[Service]\nEnvironment=A=1\n' }],
      },
      { name: 'locksmithd.service', mask: true },
      { name: 'docker.socket', enable: true },
    ],
  },
  networkd: {
    units: [
      { name: '10-eth0.network', content: '[Match]\nName=eth0\n[Network]\nDHCP=yes\n' },
      { name: '20-br0.netdev', content: '[NetDev]\nName=br0\nKind=bridge\n' },
      { name: '30-eth.link', content: '[Match]\nOriginalName=eth*\n[Link]\nNamePolicy=kernel\n' },
    ],
  },
};

/** The example in the doc comment of src/shared/config/types.ts, as written there. */
async function typesExample(): Promise<string> {
  const src = await readFile(new URL('../src/shared/config/types.ts', import.meta.url), 'utf8');
  const m = /\* Example[^\n]*:\n \*\n([\s\S]*?)\n \*\//.exec(src);
  if (!m?.[1]) throw new Error('no example in types.ts');
  return m[1]
    .split('\n')
    .map((l) => l.replace(/^ \* {0,3}/, '').replace(/^ \*$/, ''))
    .join('\n');
}

describe('valid configs', () => {
  it('accepts a config using every feature and returns it', () => {
    const r = validateConfig(FULL);
    expect(r.problems).toEqual([]);
    expect(r.config).toEqual(FULL_EXPECTED);
  });

  it('accepts the example of types.ts as it is written, and so does oem validate', async () => {
    const example = await typesExample();
    expect(example).toMatch(/^version: 1\ngroups:\n {2}- name: ops\n/);
    const r = validateConfig(example);
    expect(r.problems).toEqual([]);
    expect(r.config?.users?.[0]).toMatchObject({ name: 'ops', uid: 1500, primary_group: 'ops', groups: ['docker', 'sudo'], password_hash: '$6$...' });
    expect(r.config?.users?.[0]?.ssh_authorized_keys?.[0]).toMatch(/^ssh-ed25519 AAAA\S+ ops@example$/);
    expect(r.config?.systemd?.units?.[0]?.name).toBe('hello.service');
    expect(r.config?.storage?.filesystems?.[0]?.mount).toEqual({ path: '/var/lib/data' });
    const tmp = await mkdtemp(join(tmpdir(), 'oem-config-example-'));
    try {
      const file = join(tmp, 'example.yml');
      await writeFile(file, example);
      const cli = await oem(['validate', file]);
      expect(cli.exitCode, cli.stderr).toBe(0);
      expect(cli.stderr).toBe('');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('accepts JSON, with positions', () => {
    const json = JSON.stringify(FULL_EXPECTED, null, 2);
    const r = validateConfig(json);
    expect(r.problems).toEqual([]);
    expect(r.config).toEqual(FULL_EXPECTED);

    const bad = validateConfig('{\n  "version": 1,\n  "files": [\n    {"path": "etc/motd", "content": ""}\n  ]\n}\n');
    expect(bad.problems).toEqual([
      { severity: 'error', path: '$.files[0].path', line: 4, col: 14, message: 'path must be absolute and clean: "etc/motd"' },
    ]);
  });

  it('returns the config when there are only warnings, without the unknown keys', () => {
    const r = validateConfig(y`
      version: 1
      comment: made by hand
      files:
        - path: /etc/motd
          content: hi
          colour: blue
    `);
    expect(r.problems).toEqual([
      { severity: 'warning', path: '$.comment', line: 2, col: 1, message: 'unknown key "comment"' },
      { severity: 'warning', path: '$.files[0].colour', line: 6, col: 5, message: 'unknown key "colour"' },
    ]);
    expect(r.config).toEqual({ version: 1, files: [{ path: '/etc/motd', content: 'hi' }] });
  });

  it('follows aliases', () => {
    const r = validateConfig(y`
      version: 1
      directories:
        - &d { path: /srv/a, mode: "0750" }
      files:
        - path: /srv/a/x
          content: *d
    `);
    // Reported where the alias is used.
    expect(errors(r.problems)).toEqual([
      { severity: 'error', path: '$.files[0].content', line: 6, col: 14, message: 'expected a string, got a mapping' },
    ]);
  });

  it('reports an alias without an anchor once', () => {
    const r = validateConfig('version: 1\nfiles: *nope\n');
    expect(r.problems).toEqual([{ severity: 'error', path: '$.files', line: 2, col: 8, message: 'alias *nope refers to no anchor' }]);
  });

  it('maps unit content lines of CRLF documents', () => {
    const r = validateConfig('version: 1\r\nsystemd:\r\n  units:\r\n    - name: a.service\r\n      content: |\r\n        [Service]\r\n        Foo=1\r\n');
    expect(r.problems.map(formatProblem)).toEqual(['error at $.systemd.units[0].content (line 7, col 9): unknown key Foo in section [Service] (unit line 2)']);
  });

  it('accepts groups of opts.baseGroups only', () => {
    const text = 'version: 1\nusers:\n  - name: a\n    groups: [wheel, special]\n';
    expect(errors(validateConfig(text).problems).map((p) => p.path)).toEqual(['$.users[0].groups[1]']);
    expect(validateConfig(text, { baseGroups: ['wheel', 'special'] }).problems).toEqual([]);
    expect(errors(validateConfig(text, { baseGroups: [] }).problems).map((p) => p.path)).toEqual(['$.users[0].groups[0]', '$.users[0].groups[1]']);
    expect(validateConfig(text, { extraGroups: ['special'] }).problems).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Negative cases, one or more per rule

interface Expect {
  path: string;
  message: RegExp;
  line?: number;
  col?: number;
  severity?: 'warning';
}

interface Case {
  name: string;
  yaml: string;
  /** Every problem, in document order. */
  expect: Expect[];
  opts?: { baseGroups?: string[] };
}

const CASES: Case[] = [
  // Document level
  { name: 'empty document', yaml: '', expect: [{ path: '$', message: /is empty; expected a mapping/, line: 0, col: 0 }] },
  { name: 'comment-only document', yaml: '# nothing\n', expect: [{ path: '$', message: /is empty/ }] },
  { name: 'a list', yaml: '- version: 1\n', expect: [{ path: '$', message: /must be a mapping.*got a list/, line: 1, col: 1 }] },
  { name: 'a scalar', yaml: 'hello\n', expect: [{ path: '$', message: /must be a mapping.*got a string/, line: 1, col: 1 }] },
  {
    name: 'unclosed flow sequence',
    yaml: 'version: 1\nusers: [\n',
    expect: [{ path: '$', message: /^YAML syntax error: .*flow sequence/i, line: 3, col: 1 }],
  },
  {
    name: 'several syntax errors, each with its position',
    yaml: y`
      version: 1
      files:
        - path: /a
          content: x
        bad
      directories:
        - {path: /b]
    `,
    expect: [
      { path: '$', message: /^YAML syntax error: All mapping items must start at the same column$/, line: 5, col: 1 },
      { path: '$', message: /^YAML syntax error: Implicit map keys need to be followed by map values$/, line: 5, col: 3 },
      { path: '$.bad', message: /^unknown key "bad"$/, line: 5, col: 3, severity: 'warning' },
      { path: '$', message: /^YAML syntax error: Flow map .* must be sufficiently indented and end with a \}$/, line: 7, col: 14 },
    ],
  },
  {
    name: 'duplicate keys are YAML errors',
    yaml: 'version: 1\nfiles: []\nfiles: []\n',
    expect: [{ path: '$', message: /^YAML syntax error: Map keys must be unique/, line: 3, col: 1 }],
  },
  {
    name: 'a second document',
    yaml: 'version: 1\n---\nversion: 1\n',
    expect: [{ path: '$', message: /multiple documents/, line: 2, col: 1 }],
  },
  { name: 'missing version', yaml: 'files: []\n', expect: [{ path: '$.version', message: /version must be 1/, line: 1, col: 1 }] },
  { name: 'version 2', yaml: 'version: 2\n', expect: [{ path: '$.version', message: /^version must be 1 \(got "2"\)$/, line: 1, col: 10 }] },
  { name: 'version as a string', yaml: 'version: "1"\n', expect: [{ path: '$.version', message: /version must be 1/ }] },
  { name: 'version 1.0', yaml: 'version: 1.0\n', expect: [{ path: '$.version', message: /version must be 1 \(got "1.0"\)/ }] },
  { name: 'version null', yaml: 'version:\n', expect: [{ path: '$.version', message: /version must be 1/, line: 1, col: 1 }] },

  // Unknown keys and types
  {
    name: 'unknown keys anywhere are warnings at the key',
    yaml: y`
      version: 1
      foo: 1
      systemd:
        unit: []
      storage:
        filesystems:
          - { device: /dev/sda1, format: ext4, mount: { path: /x, opts: [ro] } }
    `,
    expect: [
      { path: '$.foo', message: /^unknown key "foo"$/, line: 2, col: 1, severity: 'warning' },
      { path: '$.systemd.unit', message: /^unknown key "unit"$/, line: 4, col: 3, severity: 'warning' },
      { path: '$.storage.filesystems[0].mount.opts', message: /^unknown key "opts"$/, line: 7, col: 61, severity: 'warning' },
    ],
  },
  {
    name: 'wrong types',
    yaml: y`
      version: 1
      users:
        - name: 5
          uid: "1000"
          system: "yes"
          groups: sudo
      groups: {name: x}
      systemd: []
      files:
        - path: /a
          content: [x]
    `,
    expect: [
      { path: '$.users[0].name', message: /^expected a string, got the number 5$/, line: 3, col: 11 },
      { path: '$.users[0].uid', message: /^expected an integer, got a string$/, line: 4, col: 10 },
      { path: '$.users[0].system', message: /^expected a boolean/, line: 5, col: 13 },
      { path: '$.users[0].groups', message: /^expected a list, got a string$/, line: 6, col: 13 },
      { path: '$.groups', message: /^expected a list, got a mapping$/, line: 7, col: 9 },
      { path: '$.systemd', message: /^expected a mapping, got a list$/, line: 8, col: 10 },
      { path: '$.files[0].content', message: /^expected a string, got a list$/, line: 11, col: 14 },
    ],
  },
  {
    name: 'a list entry that is not a mapping, and an empty value',
    yaml: 'version: 1\nfiles:\n  - /etc/motd\nusers:\n',
    expect: [
      { path: '$.files[0]', message: /^expected a mapping, got a string$/, line: 3, col: 5 },
      { path: '$.users', message: /^expected a list, got null$/, line: 4, col: 1 },
    ],
  },
  {
    name: 'missing required keys point at the entry',
    yaml: y`
      version: 1
      links:
        - path: /a
      storage:
        raid:
          - name: r
    `,
    expect: [
      { path: '$.links[0].target', message: /^missing required key "target"$/, line: 3, col: 5 },
      { path: '$.storage.raid[0].level', message: /missing required key "level"/, line: 6, col: 7 },
      { path: '$.storage.raid[0].devices', message: /missing required key "devices"/, line: 6, col: 7 },
    ],
  },

  // Paths
  {
    name: 'paths must be absolute and clean',
    yaml: y`
      version: 1
      files:
        - { path: etc/motd, content: "" }
        - { path: /etc/../motd, content: "" }
        - { path: /etc//motd, content: "" }
        - { path: /etc/motd/, content: "" }
        - { path: /etc/./motd, content: "" }
        - { path: "/etc/mo\ntd", content: "" }
        - { path: "/etc/mo\u0000td", content: "" }
        - { path: /, content: "" }
      directories:
        - path: srv
      links:
        - { path: /a/.., target: /b }
        - { path: /c, target: ../d, hard: true }
      users:
        - { name: a, home_dir: home/a, shell: /bin//sh }
      storage:
        filesystems:
          - { device: /dev/sda1, format: ext4, mount: { path: /mnt/ } }
    `,
    expect: [
      { path: '$.files[0].path', message: /^path must be absolute and clean/, line: 3, col: 13 },
      { path: '$.files[1].path', message: /^path must be absolute and clean/ },
      { path: '$.files[2].path', message: /^path must be absolute and clean/ },
      { path: '$.files[3].path', message: /^path must be absolute and clean/ },
      { path: '$.files[4].path', message: /^path must be absolute and clean/ },
      { path: '$.files[5].path', message: /^path must be absolute and clean/ },
      { path: '$.files[6].path', message: /^path must be absolute and clean/ },
      { path: '$.files[7].path', message: /^path must be absolute and clean/ },
      { path: '$.directories[0].path', message: /^path must be absolute and clean: "srv"$/, line: 12, col: 11 },
      { path: '$.links[0].path', message: /^path must be absolute and clean/ },
      { path: '$.links[1].target', message: /^path must be absolute and clean/ },
      { path: '$.users[0].home_dir', message: /^path must be absolute and clean/, line: 17, col: 26 },
      { path: '$.users[0].shell', message: /^path must be absolute and clean/, line: 17, col: 41 },
      { path: '$.storage.filesystems[0].mount.path', message: /^path must be absolute and clean/, line: 20, col: 57 },
    ],
  },

  // Modes
  {
    name: 'modes',
    yaml: y`
      version: 1
      files:
        - { path: /a, content: "", mode: 0644 }
        - { path: /b, content: "", mode: 420 }
        - { path: /c, content: "", mode: "0o644" }
        - { path: /d, content: "", mode: "999" }
        - { path: /e, content: "", mode: "64" }
        - { path: /f, content: "", mode: "17777" }
        - { path: /g, content: "", mode: "00644" }
      directories:
        - { path: /h, mode: true }
    `,
    expect: [
      { path: '$.files[0].mode', message: /^mode must be an octal string like "0644"/, line: 3, col: 36 },
      { path: '$.files[1].mode', message: /^mode must be an octal string like "0644"/ },
      { path: '$.files[2].mode', message: /^mode must be an octal string like "0644"/ },
      { path: '$.files[3].mode', message: /^mode must be an octal string like "0644"/ },
      { path: '$.files[4].mode', message: /3 or 4 octal digits/ },
      { path: '$.files[5].mode', message: /out of range/ },
      { path: '$.files[6].mode', message: /3 or 4 octal digits/ },
      { path: '$.directories[0].mode', message: /^mode must be an octal string like "0644", got a boolean/ },
    ],
  },

  // Owners
  {
    name: 'owner and group',
    yaml: y`
      version: 1
      directories:
        - { path: /a, owner: Root }
        - { path: /b, owner: -1 }
        - { path: /c, group: "4294967295" }
        - { path: /d, group: 1.5 }
        - { path: /e, owner: core, group: 4294967295 }
      links:
        - { path: /f, target: g, owner: "a b" }
    `,
    expect: [
      { path: '$.directories[0].owner', message: /owner "Root" is not a valid name/, line: 3, col: 24 },
      { path: '$.directories[1].owner', message: /owner must be a name or an id/ },
      { path: '$.directories[2].group', message: /group must be a name or an id between 0 and 4294967294/ },
      { path: '$.directories[3].group', message: /group must be a name or an id/ },
      { path: '$.directories[4].group', message: /group must be a name or an id between 0 and 4294967294/ },
      { path: '$.links[0].owner', message: /owner "a b" is not a valid name/ },
    ],
  },

  // Files
  {
    name: 'file sources',
    yaml: y`
      version: 1
      files:
        - path: /a
        - path: /b
          content: x
          content_base64: eA==
        - path: /c
          content_base64: "not base64!"
        - path: /d
          content_base64: eA
        - path: /e
          source: ftp://example.com/e
          sha512: ${SHA}
        - path: /f
          source: https://example.com/f
        - path: /g
          source: https://example.com/g
          sha512: abc
        - path: /h
          content: x
          sha512: ${SHA}
        - path: /i
          source: not a url
          sha512: ${SHA.toUpperCase()}
    `,
    expect: [
      { path: '$.files[0]', message: /^a file needs exactly one of content, content_base64 or source$/, line: 3, col: 5 },
      { path: '$.files[1].content_base64', message: /not content and content_base64/, line: 6, col: 5 },
      { path: '$.files[2].content_base64', message: /^content_base64 is not valid base64$/, line: 8, col: 21 },
      { path: '$.files[3].content_base64', message: /not valid base64/ },
      { path: '$.files[4].source', message: /^source must be an http\(s\) URL/, line: 12, col: 13 },
      { path: '$.files[5].sha512', message: /^a file with a source needs sha512/, line: 15, col: 5 },
      { path: '$.files[6].sha512', message: /^sha512 must be 128 hexadecimal characters$/, line: 18, col: 13 },
      { path: '$.files[7].sha512', message: /^sha512 is only for files with a source$/, line: 21, col: 5 },
      { path: '$.files[8].source', message: /http\(s\) URL/ },
    ],
  },

  // Users
  {
    name: 'user names, ids, keys, hashes and shells',
    yaml: y`
      version: 1
      users:
        - name: Root
        - name: ${'a'.repeat(33)}
        - name: x
          uid: -1
        - name: y
          uid: 4294967295
          password_hash: hunter2
        - name: z
          password_hash: "$6"
          ssh_authorized_keys:
            - ${KEY}
            - "ssh-ed25519 AAAA... z@example"
            - "ssh-foo AAAAC3NzaC1lZDI1NTE5 z"
            - "-----BEGIN OPENSSH PRIVATE KEY-----"
            - "${KEY}\n${KEY}"
          shell: bash
          gecos: "a:b"
        - {}
    `,
    expect: [
      { path: '$.users[0].name', message: /^invalid user name "Root"/, line: 3, col: 11 },
      { path: '$.users[1].name', message: /invalid user name.*at most 32/ },
      { path: '$.users[2].uid', message: /^uid must be between 0 and 4294967294$/, line: 6, col: 10 },
      { path: '$.users[3].uid', message: /^uid must be between 0 and 4294967294$/ },
      { path: '$.users[3].password_hash', message: /^password_hash must be a crypt\(3\) hash/ },
      { path: '$.users[4].password_hash', message: /crypt\(3\)/ },
      { path: '$.users[4].ssh_authorized_keys[1]', message: /^invalid SSH key: the ssh-ed25519 key data is not valid base64$/, line: 14, col: 9 },
      { path: '$.users[4].ssh_authorized_keys[2]', message: /^invalid SSH key: unsupported key type 'ssh-foo'$/ },
      { path: '$.users[4].ssh_authorized_keys[3]', message: /is a private key/ },
      { path: '$.users[4].ssh_authorized_keys[4]', message: /^one SSH key per entry/ },
      { path: '$.users[4].shell', message: /^path must be absolute and clean: "bash"$/ },
      { path: '$.users[4].gecos', message: /must not contain ":"/ },
      { path: '$.users[5].name', message: /^missing required key "name"$/, line: 20, col: 5 },
    ],
  },
  {
    name: 'groups users refer to must exist',
    yaml: y`
      version: 1
      groups:
        - name: team
      users:
        - name: alice
          groups: [team, docker, bob, carol, nope]
          primary_group: nada
        - name: bob
        - name: carol
          no_user_group: true
    `,
    expect: [
      { path: '$.users[0].groups[3]', message: /^group "carol" is neither created by this config nor in the base image$/, line: 6, col: 33 },
      { path: '$.users[0].groups[4]', message: /^group "nope" is neither created by this config nor in the base image$/, line: 6, col: 40 },
      { path: '$.users[0].primary_group', message: /^group "nada" is neither created/, line: 7, col: 20 },
    ],
  },
  {
    name: 'group names and ids',
    yaml: y`
      version: 1
      groups:
        - name: "My Group"
        - name: g
          gid: "100"
        - name: h
          gid: 4294967295
          password_hash: secret
    `,
    expect: [
      { path: '$.groups[0].name', message: /^invalid group name "My Group"/, line: 3, col: 11 },
      { path: '$.groups[1].gid', message: /^expected an integer, got a string$/ },
      { path: '$.groups[2].gid', message: /^gid must be between 0 and 4294967294$/ },
      { path: '$.groups[2].password_hash', message: /crypt\(3\)/ },
    ],
  },

  // systemd
  {
    name: 'systemd unit names, drop-ins and masks',
    yaml: y`
      version: 1
      systemd:
        units:
          - name: a.service
            content: |
              [Service]
              ExecStart=/bin/true
          - name: b.timer
            enable: true
          - name: hello.conf
            enable: true
          - name: "bad name.service"
          - name: masked.service
            mask: true
            enable: true
            content: |
              [Service]
              ExecStart=/bin/true
          - name: c.service
            dropins:
              - name: override
                content: "[Service]\nExecStart="
              - name: 10-x.conf
                content: |
                  ExecStart=/bin/false
          - name: d.service
            mask: true
            enable: false
    `,
    expect: [
      { path: '$.systemd.units[2].name', message: /^unit name must end in \.service, \.socket, \.device, \.mount, \.automount, \.swap, \.target, \.path, \.timer, \.slice, \.scope$/, line: 10, col: 13 },
      { path: '$.systemd.units[3].name', message: /characters systemd does not allow/, line: 12, col: 13 },
      { path: '$.systemd.units[4].mask', message: /^a masked unit cannot have content or enable: true$/, line: 14, col: 13 },
      { path: '$.systemd.units[5].dropins[0].name', message: /^drop-in name must be a file name ending in \.conf/, line: 21, col: 17 },
      { path: '$.systemd.units[5].dropins[1].content', message: /is outside any \[Section\] \(unit line 1\)$/, line: 25, col: 13 },
    ],
  },
  {
    name: 'systemd unit content, mapped to document lines',
    yaml: y`
      version: 1
      systemd:
        units:
          - name: a.service
            content: |
              [Unit]
              Description=A

              [Service]
              ExecStart=/bin/true
              Bogus=1
              [Nonsense]
          - name: b.service
            content: "[Unit]\nDescription=B\n"
          - name: c.socket
            content: >
              [Socket]
    `,
    expect: [
      { path: '$.systemd.units[0].content', message: /^unknown key Bogus in section \[Service\] \(unit line 6\)$/, line: 11, col: 9 },
      { path: '$.systemd.units[0].content', message: /^unknown section \[Nonsense\] in a \.service unit \(unit line 7\)$/, line: 12, col: 9 },
      { path: '$.systemd.units[1].content', message: /^a \.service unit needs a \[Service\] section$/, line: 14, col: 16 },
    ],
  },

  // networkd
  {
    name: 'networkd units',
    yaml: y`
      version: 1
      networkd:
        units:
          - name: eth0.conf
            content: "[Match]\nName=eth0\n"
          - name: 10-eth0.network
            content: |
              Name=eth0
          - name: 20-x.link
    `,
    expect: [
      { path: '$.networkd.units[0].name', message: /^networkd unit name must be a file name ending in \.network, \.netdev or \.link/, line: 4, col: 13 },
      { path: '$.networkd.units[1].content', message: /"Name=eth0" is outside any \[Section\]/, line: 8, col: 9 },
      { path: '$.networkd.units[2].content', message: /^missing required key "content"$/, line: 9, col: 7 },
    ],
  },

  // Storage
  {
    name: 'disks and partitions',
    yaml: y`
      version: 1
      storage:
        disks:
          - device: sdb
          - device: /tmp/disk.img
          - device: /dev/sdc
            wipe_table: yes
            partitions:
              - number: 129
              - label: ${'L'.repeat(37)}
              - type_guid: 0FC63DAF-8483-4772-8E79
              - guid: not-a-guid
              - size_mib: -1
              - start_mib: 1.5
              - number: 2
              - number: 2
    `,
    expect: [
      { path: '$.storage.disks[0].device', message: /^device must be an absolute, clean path under \/dev/, line: 4, col: 15 },
      { path: '$.storage.disks[1].device', message: /under \/dev/ },
      { path: '$.storage.disks[2].wipe_table', message: /expected a boolean/ },
      { path: '$.storage.disks[2].partitions[0].number', message: /^partition number must be between 0 and 128$/, line: 9, col: 19 },
      { path: '$.storage.disks[2].partitions[1].label', message: /too long for GPT \(max 36 characters\)/ },
      { path: '$.storage.disks[2].partitions[2].type_guid', message: /^type_guid must be a GUID/ },
      { path: '$.storage.disks[2].partitions[3].guid', message: /^guid must be a GUID/ },
      { path: '$.storage.disks[2].partitions[4].size_mib', message: /^size_mib must not be negative$/ },
      { path: '$.storage.disks[2].partitions[5].start_mib', message: /^expected an integer, got the number 1\.5$/ },
      { path: '$.storage.disks[2].partitions[7].number', message: /^duplicate partition number "2"; first at \$\.storage\.disks\[2\]\.partitions\[6\]\.number \(line 15, col 19\)$/, line: 16, col: 19 },
    ],
  },
  {
    name: 'raid',
    yaml: y`
      version: 1
      storage:
        raid:
          - { name: a, level: raid7, devices: [/dev/sda] }
          - { name: b, level: raid1, devices: [/dev/sda] }
          - { name: c, level: raid5, devices: [/dev/sda, /dev/sdb] }
          - { name: d, level: raid6, devices: [/dev/sda, /dev/sdb, /dev/sdc] }
          - { name: e, level: raid10, devices: [/dev/sda, /dev/sdb, /dev/sdc] }
          - { name: f, level: raid0, devices: [] }
          - { name: g, level: raid1, devices: [/dev/sda, /dev/sdb], spares: -1 }
          - { name: h, level: raid1, devices: [/dev/sda, /dev/sdb, /dev/sdc], spares: 2 }
          - { name: i/j, level: linear, devices: [sda] }
          - { name: a, level: raid0, devices: [/dev/sda] }
    `,
    expect: [
      { path: '$.storage.raid[0].level', message: /^level must be one of linear, raid0, raid1, raid4, raid5, raid6, raid10, got "raid7"$/, line: 4, col: 25 },
      { path: '$.storage.raid[1].devices', message: /^raid1 needs at least 2 active devices \(got 1\)$/, line: 5, col: 41 },
      { path: '$.storage.raid[2].devices', message: /^raid5 needs at least 3 active devices \(got 2\)$/ },
      { path: '$.storage.raid[3].devices', message: /^raid6 needs at least 4 active devices \(got 3\)$/ },
      { path: '$.storage.raid[4].devices', message: /^raid10 needs at least 4 active devices \(got 3\)$/ },
      { path: '$.storage.raid[5].devices', message: /^raid0 needs at least 1 active device \(got 0\)$/ },
      { path: '$.storage.raid[6].spares', message: /^spares must not be negative$/ },
      { path: '$.storage.raid[7].devices', message: /^raid1 needs at least 2 active devices \(3 devices, 2 of them spares\)$/ },
      { path: '$.storage.raid[8].name', message: /^invalid array name "i\/j"/ },
      { path: '$.storage.raid[8].devices[0]', message: /under \/dev/ },
      { path: '$.storage.raid[9].name', message: /^duplicate array name "a"; first at \$\.storage\.raid\[0\]\.name/ },
    ],
  },
  {
    name: 'volume groups',
    yaml: y`
      version: 1
      storage:
        volume_groups:
          - { name: "vg 0", devices: [/dev/sda] }
          - { name: vg1, devices: [] }
          - name: vg2
            devices: [/dev/sdb]
            logical_volumes:
              - { name: -lv }
              - { name: lv, size_mib: -5 }
              - { name: lv }
          - { name: vg1, devices: [/dev/sdc] }
          - { name: vg3 }
    `,
    expect: [
      { path: '$.storage.volume_groups[0].name', message: /^invalid volume group name "vg 0"/, line: 4, col: 15 },
      { path: '$.storage.volume_groups[1].devices', message: /^a volume group needs at least 1 device$/ },
      { path: '$.storage.volume_groups[2].logical_volumes[0].name', message: /^invalid logical volume name "-lv"/ },
      { path: '$.storage.volume_groups[2].logical_volumes[1].size_mib', message: /must not be negative/ },
      { path: '$.storage.volume_groups[2].logical_volumes[2].name', message: /^duplicate logical volume name "lv"/ },
      { path: '$.storage.volume_groups[3].name', message: /^duplicate volume group name "vg1"/ },
      { path: '$.storage.volume_groups[4].devices', message: /^missing required key "devices"$/ },
    ],
  },
  {
    name: 'filesystems',
    yaml: y`
      version: 1
      storage:
        filesystems:
          - { device: /dev/a, format: ntfs }
          - { device: /dev/b, format: ext4, label: ${'e'.repeat(17)} }
          - { device: /dev/c, format: btrfs, label: ${'b'.repeat(256)} }
          - { device: /dev/d, format: xfs, label: waytoolonglabel }
          - { device: /dev/e, format: vfat, label: ABCDEFGHIJKL }
          - { device: /dev/f, format: swap, label: ${'s'.repeat(16)} }
          - { device: /dev/g, format: ext4, label: "ääääääää€" }
          - { device: /dev/h, format: swap, mount: { path: /swap } }
          - { device: /dev/i, format: vfat, uuid: 2f0c7bd8-6e4d-4bd0-a6a8-2e1b4f0f3c11 }
          - { device: /dev/j, format: ext4, uuid: ABCD-1234, options: -O }
          - { device: /dev/k, format: xfs, mount: {} }
    `,
    expect: [
      { path: '$.storage.filesystems[0].format', message: /^format must be one of ext4, btrfs, xfs, vfat, swap, got "ntfs"$/, line: 4, col: 33 },
      { path: '$.storage.filesystems[1].label', message: /^filesystem label "e{17}" is too long for ext4 \(max 16 bytes\)$/ },
      { path: '$.storage.filesystems[2].label', message: /too long for btrfs \(max 255 bytes\)$/ },
      { path: '$.storage.filesystems[3].label', message: /^filesystem label "waytoolonglabel" is too long for xfs \(max 12 bytes\)$/, line: 7, col: 45 },
      { path: '$.storage.filesystems[4].label', message: /too long for vfat \(max 11 bytes\)$/ },
      { path: '$.storage.filesystems[5].label', message: /too long for swap \(max 15 bytes\)$/ },
      { path: '$.storage.filesystems[6].label', message: /too long for ext4 \(max 16 bytes\)$/ },
      { path: '$.storage.filesystems[7].mount', message: /^swap cannot have a mount/, line: 11, col: 39 },
      { path: '$.storage.filesystems[8].uuid', message: /vfat uuid is a volume id/ },
      { path: '$.storage.filesystems[9].uuid', message: /^uuid must be a UUID/ },
      { path: '$.storage.filesystems[9].options', message: /^expected a list, got a string$/ },
      { path: '$.storage.filesystems[10].mount.path', message: /^missing required key "path"$/ },
    ],
  },

  // Duplicates
  {
    name: 'duplicates name the first occurrence',
    yaml: y`
      version: 1
      users:
        - name: a
        - name: a
      groups:
        - name: g
        - name: g
      files:
        - { path: /etc/x, content: "" }
      directories:
        - path: /etc/x
      links:
        - { path: /etc/x, target: y }
      systemd:
        units:
          - name: a.service
            dropins:
              - { name: a.conf, content: "" }
              - { name: a.conf, content: "" }
          - name: a.service
      networkd:
        units:
          - { name: a.network, content: "" }
          - { name: a.network, content: "" }
      storage:
        disks:
          - device: /dev/sda
          - device: /dev/sda
        filesystems:
          - { device: /dev/sdb, format: ext4, mount: { path: /srv } }
          - { device: /dev/sdb, format: xfs }
          - { device: /dev/sdc, format: xfs, mount: { path: /srv } }
    `,
    expect: [
      { path: '$.users[1].name', message: /^duplicate user name "a"; first at \$\.users\[0\]\.name \(line 3, col 11\)$/, line: 4, col: 11 },
      { path: '$.groups[1].name', message: /^duplicate group name "g"; first at \$\.groups\[0\]\.name \(line 6, col 11\)$/, line: 7, col: 11 },
      { path: '$.directories[0].path', message: /^duplicate path "\/etc\/x"; first at \$\.files\[0\]\.path \(line 9, col 13\)$/, line: 11, col: 11 },
      { path: '$.links[0].path', message: /^duplicate path "\/etc\/x"; first at \$\.files\[0\]\.path/, line: 13, col: 13 },
      { path: '$.systemd.units[0].dropins[1].name', message: /^duplicate drop-in name "a\.conf"; first at \$\.systemd\.units\[0\]\.dropins\[0\]\.name/ },
      { path: '$.systemd.units[1].name', message: /^duplicate systemd unit name "a\.service"; first at \$\.systemd\.units\[0\]\.name \(line 16, col 13\)$/, line: 20, col: 13 },
      { path: '$.networkd.units[1].name', message: /^duplicate networkd unit name "a\.network"; first at \$\.networkd\.units\[0\]\.name/ },
      { path: '$.storage.disks[1].device', message: /^duplicate disk device "\/dev\/sda"; first at \$\.storage\.disks\[0\]\.device \(line 27, col 15\)$/, line: 28, col: 15 },
      { path: '$.storage.filesystems[1].device', message: /^duplicate filesystem device "\/dev\/sdb"; first at \$\.storage\.filesystems\[0\]\.device/ },
      { path: '$.storage.filesystems[2].mount.path', message: /^duplicate mount path "\/srv"; first at \$\.storage\.filesystems\[0\]\.mount\.path/ },
    ],
  },
];

describe('problems', () => {
  it.each(CASES)('$name', ({ yaml, expect: want, opts }) => {
    const r = validateConfig(yaml, opts);
    const got = r.problems.map((p) => ({ ...p }));
    expect(got).toEqual(
      want.map((w) => ({
        severity: w.severity ?? 'error',
        path: w.path,
        message: expect.stringMatching(w.message),
        line: w.line ?? expect.any(Number),
        col: w.col ?? expect.any(Number),
      })),
    );
    if (want.some((w) => w.severity !== 'warning')) expect(r.config).toBeUndefined();
    else expect(r.config).toBeDefined();
  });

  it('formats a problem with its path and position', () => {
    const text = y`
      version: 1
      systemd:
        units:
          - name: a.service
            enable: true
            content: |
              [Service]
              ExecStart=/bin/true
          - name: b.service
            mask: true
          - enable: true
            # The value of this name starts on line 14, col 9:
            name:
              hello
    `;
    const r = validateConfig(text);
    expect(r.problems.map(formatProblem)).toEqual([
      'error at $.systemd.units[2].name (line 14, col 9): unit name must end in .service, .socket, .device, .mount, .automount, .swap, .target, .path, .timer, .slice, .scope',
    ]);
    expect(formatProblem({ severity: 'error', path: '$', line: 0, col: 0, message: 'x' })).toBe('error at $: x');
  });

  it('reports every problem at once', () => {
    const r = validateConfig(y`
      version: 1
      users:
        - name: ops
          shell: bin/sh
          groups: [nope]
      files:
        - path: /etc/motd
          mode: 644
          content: hi
      systemd:
        units:
          - name: hello
      storage:
        filesystems:
          - device: /dev/sdb1
            format: xfs
            label: much-too-long
    `);
    expect(r.config).toBeUndefined();
    expect(r.problems.map((p) => [p.path, p.line, p.col])).toEqual([
      ['$.users[0].shell', 4, 12],
      ['$.users[0].groups[0]', 5, 14],
      ['$.files[0].mode', 8, 11],
      ['$.systemd.units[0].name', 12, 13],
      ['$.storage.filesystems[0].label', 17, 14],
    ]);
  });

  it('stops following an alias bomb', () => {
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i <= 9; i++) lines.push(`a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]`);
    const r = validateConfig(`version: 1\nbomb:\n  ${lines.join('\n  ')}\nfiles: *a9\n`);
    expect(r.config).toBeUndefined();
    expect(errors(r.problems).length).toBeLessThan(20);
  });
});

// ---------------------------------------------------------------------------------------------
// Files

describe('readAndValidateConfig', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oem-config-test-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads and validates a file', async () => {
    const path = join(dir, 'full.yaml');
    await writeFile(path, FULL);
    const r = await readAndValidateConfig(path);
    expect(r.problems).toEqual([]);
    expect(r.config).toEqual(FULL_EXPECTED);
  });

  it('reports problems of a file', async () => {
    const path = join(dir, 'bad.json');
    await writeFile(path, '{"version": 2}');
    const r = await readAndValidateConfig(path);
    expect(r.config).toBeUndefined();
    expect(r.problems.map(formatProblem)).toEqual(['error at $.version (line 1, col 13): version must be 1 (got "2")']);
  });

  it('refuses files larger than 4 MiB, directories, missing files and non-UTF-8', async () => {
    const big = join(dir, 'big.yaml');
    await writeFile(big, 'version: 1\n');
    await truncate(big, MAX_CONFIG_BYTES + 1);
    const nonUtf8 = join(dir, 'latin1.yaml');
    await writeFile(nonUtf8, Buffer.from('version: 1\n# caf\xe9\n', 'latin1'));
    const cases: [string, RegExp][] = [
      [big, /larger than 4 MiB/],
      [dir, /is not a regular file/],
      [join(dir, 'missing.yaml'), /no such config file/],
      [nonUtf8, /is not UTF-8 text/],
    ];
    for (const [path, message] of cases) {
      const r = await readAndValidateConfig(path);
      expect(r.config).toBeUndefined();
      expect(r.problems).toEqual([{ severity: 'error', path: '$', line: 0, col: 0, message: expect.stringMatching(message) }]);
    }
  });

  it('accepts a file of exactly 4 MiB', async () => {
    const path = join(dir, 'max.yaml');
    const head = 'version: 1\n#';
    await writeFile(path, head + 'x'.repeat(MAX_CONFIG_BYTES - head.length));
    const r = await readAndValidateConfig(path);
    expect(r.problems).toEqual([]);
    expect(r.config).toEqual({ version: 1 });
  });
});
