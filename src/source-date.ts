/**
 * SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/source-date-epoch/): when set, the time
 * everything the tool writes is given, and builds are made reproducible.
 */
export function sourceDateEpoch(): number | undefined {
  const v = process.env.SOURCE_DATE_EPOCH?.trim();
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}
