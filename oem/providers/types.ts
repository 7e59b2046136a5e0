/**
 * The agent's metadata providers: one module per platform behind one interface. Each boot the agent
 * finds out where it runs (`--provider`, else `coreos.oem.id=` / `flatcar.oem.id=` on the kernel
 * command line) and what it was given. Every part may be absent.
 *
 * Modules live in oem/providers/<id>.ts and export `provider: MetadataProvider`; the registry
 * (oem/providers/index.ts) maps oem ids to modules. Nothing in a module talks to a fixed address
 * directly: every endpoint, device and command comes from `ProviderEnv`, whose defaults are the real
 * ones and which tests override (a mock service on 127.0.0.1, a config-drive directory, a pty, a
 * stub command). Nothing else changes between test and production.
 */

export interface Metadata {
  /** Values for /run/coreos/metadata (COREOS_IPV4_PUBLIC, COREOS_IPV4_PRIVATE, COREOS_IPV6_PUBLIC,
   * COREOS_IPV6_PRIVATE, COREOS_HOSTNAME, and COREOS_<PROVIDER>_*), only those known. */
  attributes: Record<string, string>;
  hostname?: string;
  /** SSH public keys (authorized_keys lines). */
  sshKeys: string[];
  /** networkd units to write to /etc/systemd/network (name -> content). */
  networkUnits: { name: string; content: string }[];
}

/** Userdata as the platform gave it (null: none; 404 or empty is normal, not an error). */
export type Userdata = Buffer | null;

export interface ProviderEnv {
  /** Root of the system (default '/'): config drives, /etc/hosts, lease files are read under it. */
  root: string;
  /** Base URL of the platform's metadata service: --metadata-url, else the module's `metadataUrl`,
   * else http://169.254.169.254. */
  metadataUrl: string;
  /** Base URL of Azure's WireServer (Azure, Azure Stack): --wireserver-url, else DHCP option 245
   * from the networkd leases, else http://168.63.129.16. */
  wireServerUrl?: string;
  /** Config drive mount point or directory (default /media/configdrive; openstack also probes a
   * device labelled config-2, which the env may override with a directory). */
  configDrive: string;
  /** Serial device for CloudSigma (default /dev/ttyS1). */
  serialDevice: string;
  /** Command for vmtoolsd (default ['vmtoolsd']). */
  vmtoolsd: string[];
  /** The DHCP server address, when known (cloudstack, exoscale); else read from networkd leases
   * under <root>/run/systemd/netif/leases/. */
  dhcpServer?: string;
  /** Azure provisioning DVD directory holding ovf-env.xml (default /media/azure, mounting is the
   * unit's job). */
  azureDvd: string;
  /** Kernel command line (default: <root>/proc/cmdline). */
  cmdline?: string;
  /** HTTP behaviour (defaults: 10 tries, 1 s doubling, capped at 5 s, 10 s per request). */
  http: { tries: number; backoffMs: number; maxBackoffMs: number; timeoutMs: number };
  log: (line: string) => void;
}

export interface MetadataProvider {
  /** The oem id this module serves (ec2, gce, ...); aliases in `also`. */
  id: string;
  also?: string[];
  /** Instance metadata; parts the platform does not have stay empty. */
  metadata(env: ProviderEnv): Promise<Metadata>;
  /** Userdata, or null when there is none. */
  userdata(env: ProviderEnv): Promise<Userdata>;
  /** The platform's metadata service when it is not at http://169.254.169.254 (used unless
   * --metadata-url is given). */
  metadataUrl?: string;
  /**
   * Tells the platform that the machine booted (Azure's Ready health report, Packet's phone-home,
   * Scaleway's state), once per boot after provisioning succeeded. Only platforms that expect it
   * have one; an error means the platform was not told.
   */
  checkIn?(env: ProviderEnv): Promise<void>;
}

export const EMPTY_METADATA: Metadata = { attributes: {}, sshKeys: [], networkUnits: [] };
