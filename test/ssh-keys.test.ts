import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OemError } from '../src/shared/errors.js';
import {
  AUTHORIZED_KEYS_HEADER,
  keySetContent,
  mergeKeySets,
  parseAuthorizedKeys,
  readKeyFile,
  upgradeLegacyAuthorizedKeys,
  validKeySetName,
} from '../src/shared/ssh-keys.js';

// Real public keys made with OpenSSH 9.2 `ssh-keygen`, with the fingerprints `ssh-keygen -lf` printed.
const ED = {
  line: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz/nirY09uAuYtaLzkukGx70zg/7N+Yf5/f alice@laptop',
  fingerprint: 'SHA256:AdzbhNPSQ7gzqK8NHIIMSbpgdyEhff1uaC9Ar/nCfaU',
};
const RSA = {
  line:
    'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC9lPnVqryTRWw4mvshR/8IZ12K2pCycUlnOjWMs1PLyZQPqI1+ew0wui7j4uK0nfpnCK/if86QNwQC9SqonI5+cZouk1N5EBUH1k3HcVRokBwtcwmLBhtxsYXU3V5I3izjJZd3c750Za7CvpBYNL+UUlfjDiyJuPwm3PqKuxwuApW3e24DggnMBUhxWRwF8zDducWRl+FeShMyUvTbQk2lOcx396fc9fAv78O36xOaFcoAGitwJaVrWk4jJzIs3B0fkWqmm1TpUV0gIdl1wQdmQ1N6YCJhT8FVqdE2WOO3r42XeRW5A3sv6gX1JAnsWEQpmf5dmHbbmrE/q7VUA4zH bob@desk',
  fingerprint: 'SHA256:G0jrGZ3uZWZRtfAAbZb1wMkOarh0xqS2uplDbfjzibU',
};
const EC = {
  line: 'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHuBkD+7JsYWDqfOkDNEHSe3pcuadbvP7ouZy0wCw26TvvnBeA/+QWB5YqEuyPYfnon5asbRF3D7DG++B6NPbyU= carol@ci',
  fingerprint: 'SHA256:3bBdwCUVirlOpUWWUwDYkE2Wb3Yc8yP3u1OjyOsKGw8',
};
// ED certified by a throwaway CA (`ssh-keygen -s ca -I testid -n core`); ssh-keygen fingerprints
// a certificate as its key.
const ED_CERT = {
  line: 'ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIIwVPDATNuX7dQXWwLRFmgqCA1h+ipMrRuYs+8oN0RdfAAAAIENQF7ZfEWz/nirY09uAuYtaLzkukGx70zg/7N+Yf5/fAAAAAAAAAAAAAAABAAAABnRlc3RpZAAAAAgAAAAEY29yZQAAAAAAAAAA//////////8AAAAAAAAAggAAABVwZXJtaXQtWDExLWZvcndhcmRpbmcAAAAAAAAAF3Blcm1pdC1hZ2VudC1mb3J3YXJkaW5nAAAAAAAAABZwZXJtaXQtcG9ydC1mb3J3YXJkaW5nAAAAAAAAAApwZXJtaXQtcHR5AAAAAAAAAA5wZXJtaXQtdXNlci1yYwAAAAAAAAAAAAAAMwAAAAtzc2gtZWQyNTUxOQAAACA2SCv0BUq7zv/VoTVZ3lqMEusKCr+UkPQ54b/L8IUzFAAAAFMAAAALc3NoLWVkMjU1MTkAAABAsv75SALe0Vj9SaA85BkK1X3Ugy0vLxtT2CZ943IsuQp6zW5Eldbk5hcQ1sjVml7eY7A9AbJXLK7Nd/V0qtswAQ== alice@laptop',
  fingerprint: ED.fingerprint,
};

function field(line: string, i: number): string {
  const f = line.split(' ')[i];
  if (f === undefined) throw new Error(`no field ${i} in ${line}`);
  return f;
}
const ED_BLOB = field(ED.line, 1);
const RSA_BLOB = field(RSA.line, 1);

/** The OemError `fn` throws (fails the test when it throws anything else or nothing). */
function oemError(fn: () => unknown): OemError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(OemError);
    return err as OemError;
  }
  throw new Error('expected an OemError, nothing was thrown');
}

function expectUsage(fn: () => unknown, message: string | RegExp): void {
  const err = oemError(fn);
  expect(err.code).toBe('usage');
  if (typeof message === 'string') expect(err.message).toBe(message);
  else expect(err.message).toMatch(message);
}

async function rejection(p: Promise<unknown>): Promise<OemError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(OemError);
    return err as OemError;
  }
  throw new Error('expected an OemError, the promise resolved');
}

/** A valid public point of a NIST curve as SSH carries it (uncompressed), or compressed. */
function ecPoint(crv: 'P-256' | 'P-384' | 'P-521', form: 'uncompressed' | 'compressed' = 'uncompressed'): Buffer {
  const jwk = generateKeyPairSync('ec', { namedCurve: crv }).publicKey.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x!, 'base64url');
  const y = Buffer.from(jwk.y!, 'base64url');
  return form === 'uncompressed' ? Buffer.concat([Buffer.from([4]), x, y]) : Buffer.concat([Buffer.from([2 + (y[y.length - 1]! & 1)]), x]);
}

/** An RSA modulus of `bits` bits as an SSH mpint (with its leading zero byte). */
function rsaModulus(bits: number): Buffer {
  const jwk = generateKeyPairSync('rsa', { modulusLength: bits }).publicKey.export({ format: 'jwk' });
  return Buffer.concat([Buffer.from([0]), Buffer.from(jwk.n!, 'base64url')]);
}

function b64(parts: (string | Buffer)[]): string {
  return Buffer.concat(
    parts.map((p) => {
      const data = typeof p === 'string' ? Buffer.from(p) : p;
      const len = Buffer.alloc(4);
      len.writeUInt32BE(data.length);
      return Buffer.concat([len, data]);
    }),
  ).toString('base64');
}

describe('parseAuthorizedKeys', () => {
  it('parses real keys with the fingerprints ssh-keygen prints', () => {
    const keys = parseAuthorizedKeys([ED.line, RSA.line, EC.line, ED_CERT.line].join('\n') + '\n', 'keys.pub');
    expect(keys.map((k) => k.fingerprint)).toEqual([ED.fingerprint, RSA.fingerprint, EC.fingerprint, ED_CERT.fingerprint]);
    expect(keys.map((k) => k.type)).toEqual(['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ssh-ed25519-cert-v01@openssh.com']);
    expect(keys.map((k) => k.line)).toEqual([ED.line, RSA.line, EC.line, ED_CERT.line]);
    expect(keys[0]).toEqual({ line: ED.line, type: 'ssh-ed25519', blob: ED_BLOB, comment: 'alice@laptop', fingerprint: ED.fingerprint });
  });

  it('skips blank lines and comments, tolerates CRLF, a BOM and extra whitespace', () => {
    const text = `\uFEFF# my keys\r\n\r\n   \r\n  ssh-ed25519 \t ${ED_BLOB}   alice@laptop  \r\n\t# another comment\r\nssh-rsa ${RSA_BLOB}\r\n`;
    const keys = parseAuthorizedKeys(text, 'keys.pub');
    expect(keys.map((k) => k.line)).toEqual([ED.line, `ssh-rsa ${RSA_BLOB}`]);
    expect(keys[1]?.comment).toBeUndefined();
    expect(keys[1]?.options).toBeUndefined();
  });

  it('keeps comments with spaces', () => {
    const [key] = parseAuthorizedKeys(`ssh-ed25519 ${ED_BLOB} Alice Example (work laptop)`, 'k');
    expect(key?.comment).toBe('Alice Example (work laptop)');
    expect(key?.line).toBe(`ssh-ed25519 ${ED_BLOB} Alice Example (work laptop)`);
  });

  it('parses an options prefix, with quoted strings holding spaces and escaped quotes', () => {
    const options = 'command="echo \\"hi there\\"; ssh-rsa x",no-pty,from="10.0.0.0/8,192.168.1.1"';
    const text = [
      `command="echo hi",no-pty ${ED.line}`,
      `${options}   ${RSA.line}`,
      `restrict ${EC.line}`,
      `cert-authority,principals="core" ${ED_CERT.line}`,
    ].join('\n');
    const keys = parseAuthorizedKeys(text, 'keys.pub');
    expect(keys.map((k) => k.options)).toEqual(['command="echo hi",no-pty', options, 'restrict', 'cert-authority,principals="core"']);
    expect(keys.map((k) => k.fingerprint)).toEqual([ED.fingerprint, RSA.fingerprint, EC.fingerprint, ED.fingerprint]);
    expect(keys[1]?.line).toBe(`${options} ${RSA.line}`);
    expect(keys[1]?.comment).toBe('bob@desk');
    expect(keys[0]?.type).toBe('ssh-ed25519');
  });

  it('rejects an unterminated quoted option', () => {
    expectUsage(() => parseAuthorizedKeys(`command="echo hi ${ED.line}`, 'keys.pub'), 'keys.pub line 1: unterminated quoted string in the key options');
  });

  it('rejects empty input and input with no keys', () => {
    for (const text of ['', '\n\n', '# only a comment\n', '  \r\n\t\r\n']) {
      expectUsage(() => parseAuthorizedKeys(text, 'keys.pub'), 'keys.pub holds no SSH public keys');
    }
  });

  it('rejects garbage with the line number', () => {
    expectUsage(() => parseAuthorizedKeys(`${ED.line}\n\nhello world\n`, 'keys.pub'), 'keys.pub line 3: not an SSH public key');
    expectUsage(() => parseAuthorizedKeys('AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz', 'keys.pub'), 'keys.pub line 1: not an SSH public key');
    expectUsage(() => parseAuthorizedKeys('{"keys": []}', 'keys.json'), 'keys.json line 1: not an SSH public key');
    expectUsage(() => parseAuthorizedKeys(`ssh-foo ${ED_BLOB} me`, 'k'), "k line 1: unsupported key type 'ssh-foo'");
    expectUsage(() => parseAuthorizedKeys('ssh-ed25519', 'k'), 'k line 1: the ssh-ed25519 key has no key data');
  });

  it('rejects key data that is not base64', () => {
    for (const blob of ['not!base64', 'AAAAC3NzaC1lZDI1NTE5AAAAIENQF7ZfEWz', 'AAB=', 'AAAA====', 'AA=A', `${ED_BLOB}x`]) {
      expectUsage(() => parseAuthorizedKeys(`ssh-ed25519 ${blob} me`, 'keys.pub'), 'keys.pub line 1: the ssh-ed25519 key data is not valid base64');
    }
  });

  it('rejects key data whose inner type is not the declared type', () => {
    expectUsage(
      () => parseAuthorizedKeys(`ssh-rsa ${ED_BLOB} alice@laptop`, 'keys.pub'),
      "keys.pub line 1: the key data holds a 'ssh-ed25519' key, but the line says 'ssh-rsa'",
    );
    expectUsage(
      () => parseAuthorizedKeys(`ssh-ed25519-cert-v01@openssh.com ${ED_BLOB}`, 'keys.pub'),
      "keys.pub line 1: the key data holds a 'ssh-ed25519' key, but the line says 'ssh-ed25519-cert-v01@openssh.com'",
    );
    expectUsage(() => parseAuthorizedKeys(`ecdsa-sha2-nistp384 ${field(EC.line, 1)}`, 'k'), /^k line 1: the key data holds a 'ecdsa-sha2-nistp256' key/);
  });

  it('rejects key data that is not a well-formed key blob', () => {
    // Base64 that decodes, but not to an SSH string.
    expectUsage(() => parseAuthorizedKeys('ssh-ed25519 AAAA', 'k'), 'k line 1: the key data is not an SSH public key blob');
    expectUsage(() => parseAuthorizedKeys(`ssh-ed25519 ${Buffer.from('hello world!').toString('base64')}`, 'k'), 'k line 1: the key data is not an SSH public key blob');
    // A truncated ed25519 key, and one with trailing bytes.
    const ed = Buffer.from(ED_BLOB, 'base64');
    const short = ed.subarray(0, ed.length - 3).toString('base64');
    expectUsage(() => parseAuthorizedKeys(`ssh-ed25519 ${short}`, 'k'), 'k line 1: the ssh-ed25519 key data is truncated or malformed');
    const long = Buffer.concat([ed, Buffer.from([0, 0, 0, 0])]).toString('base64');
    expectUsage(() => parseAuthorizedKeys(`ssh-ed25519 ${long}`, 'k'), 'k line 1: the ssh-ed25519 key data is truncated or malformed');
    // Right type, wrong sized public key.
    expectUsage(() => parseAuthorizedKeys(`ssh-ed25519 ${b64(['ssh-ed25519', Buffer.alloc(31)])}`, 'k'), 'k line 1: the ssh-ed25519 key data is truncated or malformed');
    // An ECDSA key naming the wrong curve.
    expectUsage(
      () => parseAuthorizedKeys(`ecdsa-sha2-nistp256 ${b64(['ecdsa-sha2-nistp256', 'nistp384', Buffer.alloc(65, 4)])}`, 'k'),
      "k line 1: the ecdsa-sha2-nistp256 key data names curve 'nistp384', not 'nistp256'",
    );
    // A certificate cut off after its key.
    const cert = Buffer.from(field(ED_CERT.line, 1), 'base64');
    expectUsage(
      () => parseAuthorizedKeys(`ssh-ed25519-cert-v01@openssh.com ${cert.subarray(0, 100).toString('base64')}`, 'k'),
      'k line 1: the ssh-ed25519-cert-v01@openssh.com key data is truncated or malformed',
    );
  });

  it('accepts the other key types when the blob is well formed and the key material valid', () => {
    const cases: [string, (string | Buffer)[]][] = [
      ['ssh-dss', ['ssh-dss', Buffer.alloc(129, 1), Buffer.alloc(21, 1), Buffer.alloc(128, 1), Buffer.alloc(128, 1)]],
      ['ecdsa-sha2-nistp521', ['ecdsa-sha2-nistp521', 'nistp521', ecPoint('P-521')]],
      ['sk-ssh-ed25519@openssh.com', ['sk-ssh-ed25519@openssh.com', Buffer.alloc(32, 1), 'ssh:']],
      ['sk-ecdsa-sha2-nistp256@openssh.com', ['sk-ecdsa-sha2-nistp256@openssh.com', 'nistp256', ecPoint('P-256'), 'ssh:']],
    ];
    for (const [type, parts] of cases) {
      const [key] = parseAuthorizedKeys(`${type} ${b64(parts)} x`, 'k');
      expect(key?.type).toBe(type);
      expect(key?.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    }
  });

  it('refuses key material OpenSSH refuses: ssh-ed448, points off the curve or compressed, short RSA moduli, negative numbers', () => {
    expectUsage(() => parseAuthorizedKeys(`ssh-ed448 ${b64(['ssh-ed448', Buffer.alloc(57, 1)])}`, 'k'), "k line 1: unsupported key type 'ssh-ed448'");
    expectUsage(() => parseAuthorizedKeys(`ecdsa-sha2-nistp521 ${b64(['ecdsa-sha2-nistp521', 'nistp521', Buffer.alloc(133, 4)])}`, 'k'), 'k line 1: the ecdsa-sha2-nistp521 key data is not a valid point on nistp521');
    expectUsage(() => parseAuthorizedKeys(`ecdsa-sha2-nistp256 ${b64(['ecdsa-sha2-nistp256', 'nistp256', ecPoint('P-256', 'compressed')])}`, 'k'), /not a valid point on nistp256/);
    expectUsage(() => parseAuthorizedKeys(`ssh-rsa ${b64(['ssh-rsa', Buffer.from([1, 0, 1]), rsaModulus(768)])}`, 'k'), 'k line 1: the ssh-rsa key is 768 bits; OpenSSH needs at least 1024');
    expectUsage(() => parseAuthorizedKeys(`ssh-rsa ${b64(['ssh-rsa', Buffer.from([1, 0, 1]), rsaModulus(1024).subarray(1)])}`, 'k'), 'k line 1: the ssh-rsa key data holds a negative number');
  });

  it('rejects private keys', () => {
    const pem = (label: string) => `-----BEGIN ${label}-----\nMIIEowIBAAKCAQEAvZT51aq8k0VsOJr7IUf/CGddmtqQsnFJZzo1jLNTy8mUD6iN\n-----END ${label}-----\n`;
    const texts = [
      pem('RSA PRIVATE KEY'),
      pem('OPENSSH PRIVATE KEY'),
      pem('EC PRIVATE KEY'),
      pem('DSA PRIVATE KEY'),
      pem('PRIVATE KEY'),
      pem('ENCRYPTED PRIVATE KEY'),
      `${ED.line}\n${pem('OPENSSH PRIVATE KEY')}`,
      'PuTTY-User-Key-File-3: ssh-ed25519\r\nEncryption: none\r\nComment: eddsa-key\r\nPublic-Lines: 2\r\n',
    ];
    for (const text of texts) {
      const err = oemError(() => parseAuthorizedKeys(text, 'keys.pub'));
      expect(err.code).toBe('usage');
      expect(err.message).toBe('keys.pub is a private key; give the public key (.pub)');
      expect(err.hint).toMatch(/\.pub/);
    }
  });

  it('points at conversion for RFC 4716 and PEM public keys', () => {
    const rfc = `---- BEGIN SSH2 PUBLIC KEY ----\nComment: "alice"\n${ED_BLOB}\n---- END SSH2 PUBLIC KEY ----\n`;
    let err = oemError(() => parseAuthorizedKeys(rfc, 'alice.pub'));
    expect(err.message).toBe('alice.pub is an RFC 4716 (SSH2) public key, not in OpenSSH format');
    expect(err.hint).toBe('Convert it with: ssh-keygen -i -f alice.pub');
    err = oemError(() => parseAuthorizedKeys('-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n', 'k.pem'));
    expect(err.message).toBe('k.pem is a PEM public key, not in OpenSSH format');
  });

  it('rejects control characters inside a line', () => {
    for (const bad of ['\0', '\r', '\x1b[31m', '\x7f', '\v', '\f']) {
      expectUsage(() => parseAuthorizedKeys(`${RSA.line}\nssh-ed25519 ${ED_BLOB} al${bad}ice\n`, 'keys.pub'), 'keys.pub line 2: contains control characters');
    }
  });

  it('rejects lines longer than 16 KiB', () => {
    const long = `ssh-ed25519 ${ED_BLOB} ${'x'.repeat(17 * 1024)}`;
    expectUsage(() => parseAuthorizedKeys(`# hi\n${long}\n`, 'keys.pub'), 'keys.pub line 2: is longer than 16 KiB');
    // ...counted in bytes; a 16 KiB line is fine.
    const ok = `ssh-ed25519 ${ED_BLOB} `;
    expect(parseAuthorizedKeys(ok + 'x'.repeat(16 * 1024 - ok.length), 'k')).toHaveLength(1);
    expectUsage(() => parseAuthorizedKeys(ok + 'é'.repeat(8 * 1024), 'k'), 'k line 1: is longer than 16 KiB');
  });

  it('keeps duplicate keys (de-duplication is keySetContent and mergeKeySets)', () => {
    const keys = parseAuthorizedKeys(`${ED.line}\nssh-ed25519 ${ED_BLOB} other comment\n`, 'k');
    expect(keys).toHaveLength(2);
    expect(keys[0]?.fingerprint).toBe(keys[1]?.fingerprint);
  });
});

describe('keySetContent', () => {
  it('writes one normalized line per key, each key once', () => {
    const keys = parseAuthorizedKeys(`  ${ED.line}  \nno-pty ssh-ed25519 ${ED_BLOB} other comment\n${RSA.line}\n${ED_CERT.line}\n${RSA.line}\n`, 'k');
    expect(keySetContent(keys)).toBe(`${ED.line}\n${RSA.line}\n${ED_CERT.line}\n`);
  });

  it('is empty for no keys', () => {
    expect(keySetContent([])).toBe('');
  });
});

describe('mergeKeySets', () => {
  it('orders sets by name, keeps the first occurrence of each key, and drops comments', () => {
    const merged = mergeKeySets({
      zed: `# zed's keys\n${EC.line}\nssh-ed25519 ${ED_BLOB} a different comment\n`,
      'coreos-ignition': `${RSA.line}\r\n\r\n`,
      Admin: `no-pty ${ED.line}`,
      'oem-keys': `${EC.line}\n${RSA.line}\n`,
    });
    // Byte order: uppercase before lowercase.
    expect(merged).toBe(`${AUTHORIZED_KEYS_HEADER}\nno-pty ${ED.line}\n${RSA.line}\n${EC.line}\n`);
  });

  it('uses the update-ssh-keys header', () => {
    expect(mergeKeySets({ a: ED.line })).toBe(`# auto-generated by update-ssh-keys\n${ED.line}\n`);
  });

  it('is empty when no set holds keys (empty sets are disabled sets)', () => {
    expect(mergeKeySets({})).toBe('');
    expect(mergeKeySets({ disabled: '', comments: '# nothing\n\n' })).toBe('');
    expect(mergeKeySets({ disabled: '', live: RSA.line })).toBe(`${AUTHORIZED_KEYS_HEADER}\n${RSA.line}\n`);
  });

  it('drops lines that do not parse, as update-ssh-keys does', () => {
    const merged = mergeKeySets({ a: `garbage here\nssh-rsa ${ED_BLOB}\n${ED.line}\nssh-ed25519 AA\0AA\n` });
    expect(merged).toBe(`${AUTHORIZED_KEYS_HEADER}\n${ED.line}\n`);
  });

  it('re-merging its own output gives the same keys', () => {
    const merged = mergeKeySets({ b: `${RSA.line}\n${ED.line}`, a: EC.line });
    expect(mergeKeySets({ x: merged })).toBe(merged);
  });
});

describe('validKeySetName', () => {
  it('accepts update-ssh-keys names', () => {
    for (const name of ['coreos-ignition', 'oem', 'old_authorized_keys', 'alice@laptop', 'key.pub', 'A-1', '_x', 'a'.repeat(64)]) {
      expect(validKeySetName(name), name).toBe(true);
    }
  });

  it('rejects the rest', () => {
    for (const name of ['', '.', '..', '.hidden', 'a/b', '/etc', 'has space', 'tab\t', 'new\nline', 'ключ', 'a:b', 'a'.repeat(65), '*']) {
      expect(validKeySetName(name), JSON.stringify(name)).toBe(false);
    }
  });
});

describe('upgradeLegacyAuthorizedKeys', () => {
  it('imports an existing authorized_keys as old_authorized_keys when there are no sets', () => {
    const legacy = `# added by hand\n${ED.line}\r\nthis is not a key\n${'x'.repeat(20000)}\ncommand="uptime" ${RSA.line}\n${ED.line}\n`;
    expect(upgradeLegacyAuthorizedKeys(legacy, {})).toEqual({ old_authorized_keys: `${ED.line}\ncommand="uptime" ${RSA.line}\n` });
  });

  it('leaves existing sets alone', () => {
    const sets = { 'coreos-ignition': `${EC.line}\n` };
    const result = upgradeLegacyAuthorizedKeys(`${ED.line}\n`, sets);
    expect(result).toEqual(sets);
    expect(result).not.toBe(sets);
  });

  it('does nothing without an authorized_keys file, or one without keys', () => {
    expect(upgradeLegacyAuthorizedKeys(null, {})).toEqual({});
    expect(upgradeLegacyAuthorizedKeys('', {})).toEqual({});
    expect(upgradeLegacyAuthorizedKeys('# nothing\ngarbage\n', {})).toEqual({});
  });

  it('does not throw on private keys or binary junk', () => {
    expect(upgradeLegacyAuthorizedKeys('-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n', {})).toEqual({});
    expect(upgradeLegacyAuthorizedKeys(`\0\x01\x02\n${EC.line}\n`, {})).toEqual({ old_authorized_keys: `${EC.line}\n` });
  });

  it('merges to the old keys plus new sets', () => {
    const sets = { ...upgradeLegacyAuthorizedKeys(`${ED.line}\n`, {}), 'oem-keys': `${RSA.line}\n${ED.line}\n` };
    expect(mergeKeySets(sets)).toBe(`${AUTHORIZED_KEYS_HEADER}\n${RSA.line}\n${ED.line}\n`);
  });
});

describe('readKeyFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oem-ssh-keys-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads and parses a file, naming it in errors', async () => {
    const path = join(dir, 'keys.pub');
    await writeFile(path, `${ED.line}\n${RSA.line}\n`);
    expect((await readKeyFile(path)).map((k) => k.fingerprint)).toEqual([ED.fingerprint, RSA.fingerprint]);
    const link = join(dir, 'link.pub');
    await symlink(path, link);
    expect(await readKeyFile(link)).toHaveLength(2);
    const bad = join(dir, 'bad.pub');
    await writeFile(bad, `${ED.line}\nnope\n`);
    const err = await rejection(readKeyFile(bad));
    expect(err.code).toBe('usage');
    expect(err.message).toBe(`${bad} line 2: not an SSH public key`);
  });

  it('refuses a missing file', async () => {
    const path = join(dir, 'missing.pub');
    const err = await rejection(readKeyFile(path));
    expect(err.code).toBe('usage');
    expect(err.message).toBe(`no such key file: ${path}`);
  });

  it('refuses directories, FIFOs and files over 1 MiB', async () => {
    const sub = join(dir, 'sub');
    await mkdir(sub);
    let err = await rejection(readKeyFile(sub));
    expect(err.code).toBe('usage');
    expect(err.message).toBe(`${sub} is not a regular file`);

    const fifo = join(dir, 'fifo');
    if (spawnSync('mkfifo', [fifo]).status === 0) {
      err = await rejection(readKeyFile(fifo));
      expect(err.message).toBe(`${fifo} is not a regular file`);
    }

    const big = join(dir, 'big.pub');
    await writeFile(big, `${ED.line}\n`.repeat(Math.ceil((1024 * 1024 + 1) / (ED.line.length + 1))));
    err = await rejection(readKeyFile(big));
    expect(err.code).toBe('usage');
    expect(err.message).toBe(`${big} is larger than 1 MiB; it is not an SSH public key file`);
  });

  it('refuses an empty file', async () => {
    const path = join(dir, 'empty.pub');
    await writeFile(path, '');
    const err = await rejection(readKeyFile(path));
    expect(err.message).toBe(`${path} holds no SSH public keys`);
  });
});

// ssh-keygen comes with openssh-client (packages.txt): without it these fail, they are not skipped.
describe('against ssh-keygen', () => {
  let dir: string;
  const keygen = (...args: string[]) => execFileSync('ssh-keygen', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  /** The SHA-256 fingerprints `ssh-keygen -lf` prints for a file, one per key. */
  const fingerprints = (path: string) =>
    keygen('-l', '-E', 'sha256', '-f', path)
      .trim()
      .split('\n')
      .map((l) => field(l, 1));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oem-ssh-keygen-'));
    const gen = (name: string, ...args: string[]) => keygen('-q', '-N', '', '-C', `${name}@test`, '-f', join(dir, name), ...args);
    gen('ed25519', '-t', 'ed25519');
    gen('rsa', '-t', 'rsa', '-b', '2048');
    gen('ecdsa256', '-t', 'ecdsa', '-b', '256');
    gen('ecdsa384', '-t', 'ecdsa', '-b', '384');
    gen('ecdsa521', '-t', 'ecdsa', '-b', '521');
    gen('rsa-pem', '-t', 'rsa', '-b', '2048', '-m', 'PEM');
    gen('ecdsa-pem', '-t', 'ecdsa', '-m', 'PEM');
    gen('rsa-pkcs8', '-t', 'rsa', '-b', '2048', '-m', 'PKCS8');
    gen('ca', '-t', 'ed25519');
    keygen('-q', '-s', join(dir, 'ca'), '-I', 'test', '-n', 'core', join(dir, 'rsa.pub'));
    // A certificate of the ed25519 key from a CA of every type ssh-keygen makes.
    for (const [ca, ...args] of [['ca-rsa', '-t', 'rsa', '-b', '2048'], ['ca-ecdsa256', '-t', 'ecdsa', '-b', '256'], ['ca-ecdsa384', '-t', 'ecdsa', '-b', '384'], ['ca-ecdsa521', '-t', 'ecdsa', '-b', '521'], ['ca-dsa', '-t', 'dsa'], ['ca-ed25519', '-t', 'ed25519']] as const) {
      gen(ca, ...args);
      await mkdir(join(dir, ca + '.d'));
      await writeFile(join(dir, `${ca}.d`, 'user.pub'), await readFile(join(dir, 'ed25519.pub')));
      keygen('-q', '-s', join(dir, ca), ...(ca === 'ca-rsa' ? ['-t', 'rsa-sha2-256'] : []), '-I', 'test', '-n', 'core', join(dir, `${ca}.d`, 'user.pub'));
    }
  });

  /** ssh-keygen's verdict on one line: its fingerprint, or null when it refuses the key. */
  let probe = 0;
  const keygenVerdict = async (line: string): Promise<string | null> => {
    const path = join(dir, `probe-${probe++}.pub`);
    await writeFile(path, `${line}\n`);
    const r = spawnSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', path], { encoding: 'utf8' });
    return r.status === 0 ? field(r.stdout.trim(), 1) : null;
  };
  const ourVerdict = (line: string): string | null => {
    try {
      return parseAuthorizedKeys(line, 'k')[0]!.fingerprint;
    } catch (err) {
      expect(err).toBeInstanceOf(OemError);
      return null;
    }
  };

  it('accepts and refuses exactly the keys ssh-keygen -l does, with its fingerprints', async () => {
    const certs = await Promise.all(['ca-rsa', 'ca-ecdsa256', 'ca-ecdsa384', 'ca-ecdsa521', 'ca-dsa', 'ca-ed25519'].map(async (ca) => (await readFile(join(dir, `${ca}.d`, 'user-cert.pub'), 'utf8')).trim()));
    /** The same line with one byte of its key data flipped (`at` < 0: counted from the end). */
    const flip = (line: string, at: number) => {
      const [type, data, ...rest] = line.split(' ');
      const b = Buffer.from(data!, 'base64');
      b[at < 0 ? b.length + at : at]! ^= 1;
      return [type, b.toString('base64'), ...rest].join(' ');
    };
    const rsa1024 = rsaModulus(1024);
    const e = Buffer.from([1, 0, 1]);
    const p256 = ecPoint('P-256');
    const offCurve = Buffer.from(ecPoint('P-521'));
    offCurve[offCurve.length - 1]! ^= 1;
    const cases: [string, string, boolean][] = [
      ...PUBLIC.map((name): [string, string, boolean] => [name, '', true]),
      ...certs.map((c, i): [string, string, boolean] => [`certificate ${i}`, c, true]),
      ...certs.map((c, i): [string, string, boolean] => [`certificate ${i}, signature changed`, flip(c, -5), false]),
      ...certs.map((c, i): [string, string, boolean] => [`certificate ${i}, nonce changed`, flip(c, 50), false]),
      ['ssh-ed448', `ssh-ed448 ${b64(['ssh-ed448', Buffer.alloc(57, 1)])}`, false],
      ['ed25519, any 32 bytes', `ssh-ed25519 ${b64(['ssh-ed25519', Buffer.alloc(32, 0xff)])}`, true],
      ['nistp521 off the curve', `ecdsa-sha2-nistp521 ${b64(['ecdsa-sha2-nistp521', 'nistp521', offCurve])}`, false],
      ['nistp521 filler', `ecdsa-sha2-nistp521 ${b64(['ecdsa-sha2-nistp521', 'nistp521', Buffer.alloc(133, 4)])}`, false],
      ['nistp256 compressed', `ecdsa-sha2-nistp256 ${b64(['ecdsa-sha2-nistp256', 'nistp256', ecPoint('P-256', 'compressed')])}`, false],
      ['nistp384 valid', `ecdsa-sha2-nistp384 ${b64(['ecdsa-sha2-nistp384', 'nistp384', ecPoint('P-384')])}`, true],
      ['sk-ecdsa valid', `sk-ecdsa-sha2-nistp256@openssh.com ${b64(['sk-ecdsa-sha2-nistp256@openssh.com', 'nistp256', p256, 'ssh:'])}`, true],
      ['sk-ecdsa filler', `sk-ecdsa-sha2-nistp256@openssh.com ${b64(['sk-ecdsa-sha2-nistp256@openssh.com', 'nistp256', Buffer.alloc(65, 4), 'ssh:'])}`, false],
      ['sk-ed25519', `sk-ssh-ed25519@openssh.com ${b64(['sk-ssh-ed25519@openssh.com', Buffer.alloc(32, 1), 'ssh:'])}`, true],
      ['rsa 768', `ssh-rsa ${b64(['ssh-rsa', e, rsaModulus(768)])}`, false],
      ['rsa 1024', `ssh-rsa ${b64(['ssh-rsa', e, rsa1024])}`, true],
      ['rsa, negative modulus', `ssh-rsa ${b64(['ssh-rsa', e, rsa1024.subarray(1)])}`, false],
      ['rsa, exponent with a needless zero byte', `ssh-rsa ${b64(['ssh-rsa', Buffer.concat([Buffer.from([0]), e]), rsa1024])}`, true],
      ['dsa filler', `ssh-dss ${b64(['ssh-dss', Buffer.alloc(129, 1), Buffer.alloc(21, 1), Buffer.alloc(128, 1), Buffer.alloc(128, 1)])}`, true],
      ['dsa, negative', `ssh-dss ${b64(['ssh-dss', Buffer.alloc(129, 0x81), Buffer.alloc(21, 1), Buffer.alloc(128, 1), Buffer.alloc(128, 1)])}`, false],
    ];
    for (const [name, given, accepted] of cases) {
      const line = given || (await readFile(join(dir, name), 'utf8')).trim();
      const theirs = await keygenVerdict(line);
      expect(theirs !== null, `ssh-keygen on ${name}`).toBe(accepted);
      expect(ourVerdict(line), name).toBe(theirs);
    }
  });
  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  const PUBLIC = ['ed25519.pub', 'rsa.pub', 'ecdsa256.pub', 'ecdsa384.pub', 'ecdsa521.pub', 'rsa-cert.pub', 'ca.pub'];

  it('computes the fingerprints ssh-keygen -lf prints', async () => {
    for (const name of PUBLIC) {
      const path = join(dir, name);
      const keys = await readKeyFile(path);
      expect(keys.map((k) => k.fingerprint), name).toEqual(fingerprints(path));
      expect(keys[0]?.line).toBe((await readFile(path, 'utf8')).trim());
    }
  });

  it('agrees with ssh-keygen on an authorized_keys file with options, comments and CRLF', async () => {
    const lines = await Promise.all(PUBLIC.map(async (name) => (await readFile(join(dir, name), 'utf8')).trim()));
    const text = ['# header', ...lines.map((l, i) => (i % 2 === 0 ? `no-pty,command="echo \\"hi\\" there" ${l}` : l)), ''].join('\r\n');
    const path = join(dir, 'authorized_keys');
    await writeFile(path, text);
    expect((await readKeyFile(path)).map((k) => k.fingerprint)).toEqual(fingerprints(path));
  });

  it('refuses the private keys ssh-keygen writes', async () => {
    for (const name of ['ed25519', 'rsa', 'rsa-pem', 'ecdsa-pem', 'rsa-pkcs8', 'ca']) {
      const path = join(dir, name);
      const err = await rejection(readKeyFile(path));
      expect(err.code).toBe('usage');
      expect(err.message).toBe(`${path} is a private key; give the public key (.pub)`);
    }
  });

  it('de-duplicates a real key re-commented, across sets', async () => {
    const line = (await readFile(join(dir, 'ed25519.pub'), 'utf8')).trim();
    const recommented = line.replace(/ \S+$/, ' someone-else');
    const merged = mergeKeySets({ b: `${recommented}\n`, a: `${line}\n` });
    expect(merged).toBe(`${AUTHORIZED_KEYS_HEADER}\n${line}\n`);
  });
});
