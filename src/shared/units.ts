/**
 * A strict systemd unit-file checker for when systemd-analyze is not available (and a first pass
 * before it): syntax (sections, key=value, continuations), known sections for the unit type, and the
 * keys oem's units use plus the common ones. Returns problems; an empty list means the unit is fine.
 */

export const UNIT_SUFFIXES = ['service', 'socket', 'device', 'mount', 'automount', 'swap', 'target', 'path', 'timer', 'slice', 'scope'] as const;

const UNIT_KEYS = new Set([
  'Description', 'Documentation', 'Requires', 'Requisite', 'Wants', 'BindsTo', 'PartOf', 'Upholds', 'Conflicts', 'Before', 'After',
  'OnFailure', 'OnSuccess', 'PropagatesReloadTo', 'ReloadPropagatedFrom', 'JoinsNamespaceOf', 'RequiresMountsFor', 'OnFailureJobMode',
  'IgnoreOnIsolate', 'StopWhenUnneeded', 'RefuseManualStart', 'RefuseManualStop', 'AllowIsolate', 'DefaultDependencies',
  'CollectMode', 'FailureAction', 'SuccessAction', 'StartLimitIntervalSec', 'StartLimitBurst', 'StartLimitAction', 'JobTimeoutSec',
  'RebootArgument', 'SourcePath',
]);
const CONDITION = /^(Condition|Assert)(Architecture|Firmware|Virtualization|Host|KernelCommandLine|KernelVersion|Credential|Environment|Security|Capability|ACPower|NeedsUpdate|FirstBoot|PathExists|PathExistsGlob|PathIsDirectory|PathIsSymbolicLink|PathIsMountPoint|PathIsReadWrite|PathIsEncrypted|DirectoryNotEmpty|FileNotEmpty|FileIsExecutable|User|Group|ControlGroupController|Memory|CPUs|CPUFeature|OSRelease|MemoryPressure|CPUPressure|IOPressure)$/;
const INSTALL_KEYS = new Set(['Alias', 'WantedBy', 'RequiredBy', 'UpheldBy', 'Also', 'DefaultInstance']);
const EXEC_KEYS = new Set([
  'WorkingDirectory', 'RootDirectory', 'User', 'Group', 'DynamicUser', 'SupplementaryGroups', 'Environment', 'EnvironmentFile',
  'PassEnvironment', 'UnsetEnvironment', 'StandardInput', 'StandardOutput', 'StandardError', 'SyslogIdentifier', 'LimitNOFILE',
  'LimitNPROC', 'LimitCORE', 'LimitMEMLOCK', 'UMask', 'Nice', 'IOSchedulingClass', 'CPUSchedulingPolicy', 'PrivateTmp', 'PrivateDevices',
  'PrivateNetwork', 'ProtectSystem', 'ProtectHome', 'NoNewPrivileges', 'ReadWritePaths', 'ReadOnlyPaths', 'InaccessiblePaths',
  'CapabilityBoundingSet', 'AmbientCapabilities', 'TTYPath', 'TTYReset', 'TTYVHangup', 'StateDirectory', 'RuntimeDirectory',
  'CacheDirectory', 'LogsDirectory', 'ConfigurationDirectory', 'RuntimeDirectoryMode', 'StateDirectoryMode', 'LoadCredential',
  'SetCredential', 'ProtectKernelModules', 'ProtectKernelTunables', 'ProtectControlGroups', 'RestrictNamespaces', 'MemoryDenyWriteExecute',
  'LockPersonality', 'RestrictRealtime', 'SystemCallFilter', 'KillMode', 'KillSignal', 'SendSIGKILL', 'TimeoutSec', 'IgnoreSIGPIPE',
  'MemoryMax', 'MemoryHigh', 'CPUQuota', 'TasksMax', 'Slice', 'Delegate', 'IOWeight', 'CPUWeight', 'DeviceAllow', 'DevicePolicy',
]);
const SERVICE_KEYS = new Set([
  ...EXEC_KEYS, 'Type', 'ExitType', 'RemainAfterExit', 'GuessMainPID', 'PIDFile', 'BusName', 'ExecStart', 'ExecStartPre', 'ExecStartPost',
  'ExecCondition', 'ExecReload', 'ExecStop', 'ExecStopPost', 'RestartSec', 'TimeoutStartSec', 'TimeoutStopSec', 'TimeoutAbortSec',
  'RuntimeMaxSec', 'WatchdogSec', 'Restart', 'SuccessExitStatus', 'RestartPreventExitStatus', 'RestartForceExitStatus', 'NotifyAccess',
  'Sockets', 'FileDescriptorStoreMax', 'OOMPolicy', 'OOMScoreAdjust',
]);
const SECTIONS: Record<string, Record<string, Set<string>>> = {
  service: { Service: SERVICE_KEYS },
  socket: { Socket: new Set([...EXEC_KEYS, 'ListenStream', 'ListenDatagram', 'ListenSequentialPacket', 'ListenFIFO', 'Accept', 'Service', 'SocketMode', 'BindIPv6Only', 'Backlog', 'FreeBind', 'MaxConnections']) },
  timer: { Timer: new Set(['OnActiveSec', 'OnBootSec', 'OnStartupSec', 'OnUnitActiveSec', 'OnUnitInactiveSec', 'OnCalendar', 'AccuracySec', 'RandomizedDelaySec', 'Persistent', 'WakeSystem', 'RemainAfterElapse', 'Unit']) },
  path: { Path: new Set(['PathExists', 'PathExistsGlob', 'PathChanged', 'PathModified', 'DirectoryNotEmpty', 'Unit', 'MakeDirectory', 'DirectoryMode']) },
  mount: { Mount: new Set([...EXEC_KEYS, 'What', 'Where', 'Type', 'Options', 'SloppyOptions', 'LazyUnmount', 'ForceUnmount', 'DirectoryMode', 'TimeoutSec']) },
  automount: { Automount: new Set(['Where', 'DirectoryMode', 'TimeoutIdleSec']) },
  swap: { Swap: new Set([...EXEC_KEYS, 'What', 'Priority', 'Options', 'TimeoutSec']) },
  slice: { Slice: new Set(['MemoryMax', 'MemoryHigh', 'CPUQuota', 'TasksMax', 'CPUWeight', 'IOWeight']) },
  target: {},
  device: {},
  scope: { Scope: new Set(['Slice', 'RuntimeMaxSec', 'TimeoutStopSec']) },
};

export interface UnitProblem {
  line: number;
  message: string;
}

/** The unit type of a name (the suffix), or null. */
export function unitType(name: string): string | null {
  const m = /^[A-Za-z0-9:_.\\@-]+\.([a-z]+)$/.exec(name);
  return m && (UNIT_SUFFIXES as readonly string[]).includes(m[1]!) ? m[1]! : null;
}

/** Syntax only: sections and key=value lines (for unit content and drop-ins of any type). */
export function checkUnitSyntax(text: string): UnitProblem[] {
  const problems: UnitProblem[] = [];
  let section: string | null = null;
  let continued = false;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    const n = i + 1;
    if (continued) {
      continued = line.endsWith('\\');
      return;
    }
    const t = line.trim();
    if (t === '' || t.startsWith('#') || t.startsWith(';')) return;
    const sec = /^\[([^[\]]+)\]$/.exec(t);
    if (sec) {
      section = sec[1]!;
      return;
    }
    if (!section) {
      problems.push({ line: n, message: `"${t.slice(0, 40)}" is outside any [Section]` });
      return;
    }
    const kv = /^([A-Za-z0-9_-]+)\s*=(.*)$/.exec(t);
    if (!kv) {
      problems.push({ line: n, message: `"${t.slice(0, 40)}" is not a key=value line` });
      return;
    }
    continued = line.endsWith('\\');
  });
  return problems;
}

/** Syntax plus known sections and keys for a unit of the given name. */
export function checkUnit(name: string, text: string): UnitProblem[] {
  const type = unitType(name);
  if (!type) return [{ line: 0, message: `unit name ${name} must end in .${UNIT_SUFFIXES.join(', .')}` }];
  const problems = checkUnitSyntax(text);
  const typeSections = SECTIONS[type] ?? {};
  let section: string | null = null;
  const seen = new Set<string>();
  let continued = false;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (continued) {
      continued = line.endsWith('\\');
      return;
    }
    const t = line.trim();
    const sec = /^\[([^[\]]+)\]$/.exec(t);
    if (sec) {
      section = sec[1]!;
      seen.add(section);
      if (section !== 'Unit' && section !== 'Install' && !typeSections[section] && !section.startsWith('X-')) {
        problems.push({ line: i + 1, message: `unknown section [${section}] in a .${type} unit` });
      }
      return;
    }
    const kv = /^([A-Za-z0-9_-]+)\s*=/.exec(t);
    if (!kv || !section || section.startsWith('X-')) return;
    continued = line.endsWith('\\');
    const key = kv[1]!;
    if (key.startsWith('X-')) return;
    const ok =
      section === 'Unit' ? UNIT_KEYS.has(key) || CONDITION.test(key) : section === 'Install' ? INSTALL_KEYS.has(key) : typeSections[section]?.has(key) ?? true;
    if (!ok) problems.push({ line: i + 1, message: `unknown key ${key} in section [${section}]` });
  });
  if (type === 'service' && !seen.has('Service')) problems.push({ line: 0, message: 'a .service unit needs a [Service] section' });
  return problems;
}
