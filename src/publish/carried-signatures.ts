/**
 * Signatures a release carries over from its groups (published without --sign-key): each artifact's
 * .sig and .DIGESTS.asc are verified against the keys given with --key, and must be by the key the
 * provider's manifest names. `oem publish` never passes on a signature it has not checked.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkDigests, keyName, loadTrustedKeys, verifyCleartext, verifyDetached } from '../release/verify.js';
import type { ProviderDir } from './group.js';
import { mismatch, refuse } from './refuse.js';

const HINT = "give the signer's public key with --key FILE, or sign the release anew with --sign-key";

/** The providers whose directory holds any signature (manifest signed or not). */
function carrying(p: ProviderDir): boolean {
  return p.manifest.signingKey !== null || [...p.files.keys()].some((f) => f.endsWith('.sig') || f.endsWith('.DIGESTS.asc'));
}

/** Verifies every carried signature; returns how many files were checked. */
export async function checkCarriedSignatures(providers: ProviderDir[], keyFiles: string[], log: (l: string) => void): Promise<number> {
  const signed = providers.filter(carrying);
  if (!signed.length) return 0;
  if (!keyFiles.length) {
    const p = signed[0]!;
    throw refuse(`${p.group}: ${p.provider} is signed, and oem publish does not pass on signatures it has not checked`, HINT);
  }
  const trusted = await loadTrustedKeys('flatcar', keyFiles);
  let checked = 0;
  for (const p of signed) {
    const at = (f: string) => `${p.group}: ${p.provider}/${f}`;
    const want = p.manifest.signingKey;
    for (const a of p.manifest.artifacts) {
      const sigName = `${a.name}.sig`;
      const ascName = `${a.name}.DIGESTS.asc`;
      for (const f of [sigName, ascName]) if (!p.files.has(f)) throw refuse(`${at(f)}: missing beside a signed artifact`, 'rebuild that group');
      log(`${p.provider}: checking the signature of ${a.name}`);
      const v = await verifyDetached(join(p.dir, a.name), await readFile(join(p.dir, sigName)), sigName, trusted, at(a.name));
      if (want === null || v.keyFingerprint !== want.fingerprint.toUpperCase()) {
        throw mismatch(`${at(sigName)}: signed by ${v.key}, manifest.json names ${want === null ? 'no signing key' : want.fingerprint}`);
      }
      const text = await verifyCleartext(await readFile(join(p.dir, ascName), 'utf8'), at(ascName), trusted);
      checkDigests(text, at(ascName), a.name, v.sha512);
      checked += 2;
    }
  }
  log(`${checked} signatures checked against ${trusted.keys.map(keyName).join(', ')}`);
  return checked;
}
