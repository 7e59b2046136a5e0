/**
 * Machine descriptions that go with a disk into a bundle users import in one step, written as text
 * like formats.ts writes the OVF of `ova`: the OVF of a VirtualBox appliance (with its vbox:Machine
 * section) and, for a Parallels .pvm bundle, the VM's config.pvs and the disk's DiskDescriptor.xml.
 * Every value comes from the caller (IDs and MAC addresses derived from the conversion's inputs), so
 * the same inputs give the same bytes.
 *
 * The machine is Flatcar's default for these types (build_library/vm_image_util.sh: IMG_DEFAULT_MEM
 * 1024 MiB, IMG_DEFAULT_CPUS 2), one disk and one NAT network adapter. Element names and enumeration
 * values follow the formats' readers: VirtualBox's OVF reader and settings schema
 * (src/VBox/Main/xml/ovfreader.cpp, VirtualBox-settings.xsd) and the Parallels XML model
 * (libprlxmlmodel Schema/VmConfig.xsd, libprlsdk PrlEnums.h/PrlOses.h, ploop's DiskDescriptor.xml).
 */

export const VM_MEMORY_MIB = 1024;
export const VM_CPUS = 2;

const MiB = 1024 * 1024;

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** The first 16 bytes of `seed` as an RFC 9562 version 8 (custom) UUID, lowercase, without braces. */
export function uuidFrom(seed: Buffer): string {
  if (seed.length < 16) throw new Error('a UUID needs 16 bytes of seed');
  const u = Buffer.from(seed.subarray(0, 16));
  u[6] = (u[6]! & 0x0f) | 0x80;
  u[8] = (u[8]! & 0x3f) | 0x80;
  const h = u.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A MAC address (12 upper-case hex digits) in the vendor's OUI, the rest from `seed`. */
export function macFrom(oui: string, seed: Buffer): string {
  if (!/^[0-9A-F]{6}$/.test(oui)) throw new Error(`invalid OUI ${oui}`);
  return `${oui}${seed.subarray(0, 3).toString('hex').toUpperCase()}`;
}

/** VirtualBox's OUI (08:00:27), which VirtualBox itself gives its adapters. */
export const VIRTUALBOX_OUI = '080027';
/** Parallels' OUI (00:1C:42). */
export const PARALLELS_OUI = '001C42';

// ---------------------------------------------------------------------------------------------
// VirtualBox

export interface VirtualBoxOvfOptions {
  /** The VM's name (VirtualSystem id, vbox:Machine name). */
  name: string;
  /** The disk's file name in the appliance, its size in bytes and its virtual size (capacity). */
  disk: string;
  diskSize: number;
  capacity: number;
  /** The disk's UUID (vbox:uuid), which the vbox:Machine's attachment names. */
  diskUuid: string;
  machineUuid: string;
  /** 12 hex digits. */
  mac: string;
  /** Seconds since the epoch (vbox:Machine lastStateChange). */
  mtime: number;
  memoryMiB?: number;
  cpus?: number;
}

/** An OVF hardware Item: rasd elements in schema (alphabetical) order. */
function ovfItem(fields: [string, string][]): string[] {
  return ['      <Item>', ...fields.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `        <rasd:${k}>${xml(v)}</rasd:${k}>`), '      </Item>'];
}

/**
 * The opening of an OVF 1.0 envelope, up to the VirtualSystem's Name: the one streamOptimized disk
 * file and the NAT network. With `vboxDiskUuid`, VirtualBox's namespace and the disk's vbox:uuid.
 */
function ovfOpening(o: { name: string; disk: string; diskSize: number; capacity: number }, vboxDiskUuid?: string): string[] {
  const n = xml(o.name);
  const vbox = vboxDiskUuid !== undefined;
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"${vbox ? ' xmlns:vbox="http://www.virtualbox.org/ovf/machine"' : ''}>`,
    '  <References>',
    `    <File ovf:href="${xml(o.disk)}" ovf:id="file1" ovf:size="${o.diskSize}"/>`,
    '  </References>',
    '  <DiskSection>',
    '    <Info>List of the virtual disks used in the package</Info>',
    `    <Disk ovf:capacity="${o.capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"${vbox ? ` vbox:uuid="${vboxDiskUuid}"` : ''}/>`,
    '  </DiskSection>',
    '  <NetworkSection>',
    '    <Info>Logical networks used in the package</Info>',
    '    <Network ovf:name="NAT">',
    '      <Description>Logical network used by this appliance.</Description>',
    '    </Network>',
    '  </NetworkSection>',
    `  <VirtualSystem ovf:id="${n}">`,
    '    <Info>A virtual machine</Info>',
    `    <Name>${n}</Name>`,
  ];
}

/**
 * An OVF 1.0 envelope: one VM (1 CPU, 1 GiB RAM, a SATA controller with the one disk, one NIC on
 * NAT) and one streamOptimized VMDK. rasd elements are in schema (alphabetical) order.
 */
export function ovfEnvelope(o: { name: string; disk: string; diskSize: number; capacity: number }): string {
  const n = xml(o.name);
  return [
    ...ovfOpening(o),
    '    <OperatingSystemSection ovf:id="101">',
    '      <Info>The kind of installed guest operating system</Info>',
    '      <Description>Linux 64-Bit</Description>',
    '    </OperatingSystemSection>',
    '    <VirtualHardwareSection>',
    '      <Info>Virtual hardware requirements for a virtual machine</Info>',
    '      <System>',
    '        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>',
    '        <vssd:InstanceID>0</vssd:InstanceID>',
    `        <vssd:VirtualSystemIdentifier>${n}</vssd:VirtualSystemIdentifier>`,
    '        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>',
    '      </System>',
    ...ovfItem([
      ['Caption', '1 virtual CPU'],
      ['Description', 'Number of virtual CPUs'],
      ['ElementName', '1 virtual CPU'],
      ['InstanceID', '1'],
      ['ResourceType', '3'],
      ['VirtualQuantity', '1'],
    ]),
    ...ovfItem([
      ['AllocationUnits', 'byte * 2^20'],
      ['Caption', '1024 MB of memory'],
      ['Description', 'Memory Size'],
      ['ElementName', '1024 MB of memory'],
      ['InstanceID', '2'],
      ['ResourceType', '4'],
      ['VirtualQuantity', '1024'],
    ]),
    ...ovfItem([
      ['Address', '0'],
      ['Caption', 'sataController0'],
      ['Description', 'SATA Controller'],
      ['ElementName', 'sataController0'],
      ['InstanceID', '3'],
      ['ResourceSubType', 'AHCI'],
      ['ResourceType', '20'],
    ]),
    ...ovfItem([
      ['AutomaticAllocation', 'true'],
      ['Caption', "Ethernet adapter on 'NAT'"],
      ['Connection', 'NAT'],
      ['ElementName', "Ethernet adapter on 'NAT'"],
      ['InstanceID', '4'],
      ['ResourceSubType', 'E1000'],
      ['ResourceType', '10'],
    ]),
    ...ovfItem([
      ['AddressOnParent', '0'],
      ['Caption', 'disk1'],
      ['Description', 'Disk Image'],
      ['ElementName', 'disk1'],
      ['HostResource', '/disk/vmdisk1'],
      ['InstanceID', '5'],
      ['Parent', '3'],
      ['ResourceType', '17'],
    ]),
    '    </VirtualHardwareSection>',
    '  </VirtualSystem>',
    '</Envelope>',
    '',
  ].join('\n');
}

/**
 * An OVF 1.0 envelope describing a VirtualBox VM: a PIIX4 IDE controller (two OVF IDE controllers,
 * its two channels, as VirtualBox exports it) with the streamOptimized disk as primary master, an
 * E1000 adapter on NAT, and the same machine again as a vbox:Machine section (VirtualBox settings
 * format 1.16, VirtualBox 5.1 and later), which VirtualBox prefers to the OVF hardware when it
 * imports. I/O APIC is on (VirtualBox needs it for more than one CPU), the clock in UTC.
 */
export function virtualboxOvf(o: VirtualBoxOvfOptions): string {
  const memory = o.memoryMiB ?? VM_MEMORY_MIB;
  const cpus = o.cpus ?? VM_CPUS;
  if (!/^[0-9A-F]{12}$/.test(o.mac)) throw new Error(`invalid MAC address ${o.mac}`);
  const n = xml(o.name);
  const stamp = new Date(o.mtime * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return [
    ...ovfOpening(o, o.diskUuid),
    '    <OperatingSystemSection ovf:id="100">',
    '      <Info>The kind of installed guest operating system</Info>',
    '      <Description>Linux 2.6.x 64-Bit</Description>',
    '      <vbox:OSType ovf:required="false">Linux26_64</vbox:OSType>',
    '    </OperatingSystemSection>',
    '    <VirtualHardwareSection>',
    '      <Info>Virtual hardware requirements for a virtual machine</Info>',
    '      <System>',
    '        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>',
    '        <vssd:InstanceID>0</vssd:InstanceID>',
    `        <vssd:VirtualSystemIdentifier>${n}</vssd:VirtualSystemIdentifier>`,
    '        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>',
    '      </System>',
    ...ovfItem([
      ['Caption', `${cpus} virtual CPU`],
      ['Description', 'Number of virtual CPUs'],
      ['ElementName', `${cpus} virtual CPU`],
      ['InstanceID', '1'],
      ['ResourceType', '3'],
      ['VirtualQuantity', String(cpus)],
    ]),
    ...ovfItem([
      ['AllocationUnits', 'byte * 2^20'],
      ['Caption', `${memory} MB of memory`],
      ['Description', 'Memory Size'],
      ['ElementName', `${memory} MB of memory`],
      ['InstanceID', '2'],
      ['ResourceType', '4'],
      ['VirtualQuantity', String(memory)],
    ]),
    ...ovfItem([
      ['Address', '0'],
      ['Caption', 'ideController0'],
      ['Description', 'IDE Controller'],
      ['ElementName', 'ideController0'],
      ['InstanceID', '3'],
      ['ResourceSubType', 'PIIX4'],
      ['ResourceType', '5'],
    ]),
    ...ovfItem([
      ['Address', '1'],
      ['Caption', 'ideController1'],
      ['Description', 'IDE Controller'],
      ['ElementName', 'ideController1'],
      ['InstanceID', '4'],
      ['ResourceSubType', 'PIIX4'],
      ['ResourceType', '5'],
    ]),
    ...ovfItem([
      ['AutomaticAllocation', 'true'],
      ['Caption', "Ethernet adapter on 'NAT'"],
      ['Connection', 'NAT'],
      ['ElementName', "Ethernet adapter on 'NAT'"],
      ['InstanceID', '5'],
      ['ResourceSubType', 'E1000'],
      ['ResourceType', '10'],
    ]),
    ...ovfItem([
      ['AddressOnParent', '0'],
      ['Caption', 'disk1'],
      ['Description', 'Disk Image'],
      ['ElementName', 'disk1'],
      ['HostResource', '/disk/vmdisk1'],
      ['InstanceID', '6'],
      ['Parent', '3'],
      ['ResourceType', '17'],
    ]),
    '    </VirtualHardwareSection>',
    `    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{${o.machineUuid}}" name="${n}" OSType="Linux26_64" snapshotFolder="Snapshots" lastStateChange="${stamp}">`,
    '      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>',
    '      <Hardware>',
    `        <CPU count="${cpus}">`,
    '          <PAE enabled="true"/>',
    '          <LongMode enabled="true"/>',
    '        </CPU>',
    `        <Memory RAMSize="${memory}"/>`,
    '        <Boot>',
    '          <Order position="1" device="HardDisk"/>',
    '          <Order position="2" device="None"/>',
    '          <Order position="3" device="None"/>',
    '          <Order position="4" device="None"/>',
    '        </Boot>',
    '        <BIOS>',
    '          <ACPI enabled="true"/>',
    '          <IOAPIC enabled="true"/>',
    '        </BIOS>',
    '        <Network>',
    `          <Adapter slot="0" enabled="true" MACAddress="${o.mac}" type="82540EM">`,
    '            <NAT/>',
    '          </Adapter>',
    '        </Network>',
    '        <RTC localOrUTC="UTC"/>',
    '      </Hardware>',
    '      <StorageControllers>',
    '        <StorageController name="IDE Controller" type="PIIX4" PortCount="2" useHostIOCache="true" Bootable="true">',
    '          <AttachedDevice type="HardDisk" hotpluggable="false" port="0" device="0">',
    `            <Image uuid="{${o.diskUuid}}"/>`,
    '          </AttachedDevice>',
    '        </StorageController>',
    '      </StorageControllers>',
    '    </vbox:Machine>',
    '  </VirtualSystem>',
    '</Envelope>',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Parallels

/**
 * The GUID Parallels gives the base image of every disk (the "top delta" of an unsnapshotted disk;
 * ploop hardcodes it for Parallels compatibility). The data file is `<disk>.0.<GUID>.hds`.
 */
export const PARALLELS_BASE_SNAPSHOT = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
const NULL_GUID = '{00000000-0000-0000-0000-000000000000}';

/** Geometry Parallels gives disk images: 16 heads, 32 sectors per track. */
export const PARALLELS_HEADS = 16;
export const PARALLELS_SECTORS_PER_TRACK = 32;

/** The header of an expanding Parallels image (.hds) as qemu-img writes it ("WithouFreSpacExt", version 2). */
export interface ParallelsHeader {
  magic: string;
  version: number;
  heads: number;
  cylinders: number;
  /** The cluster size, in 512-byte sectors ("tracks" in the format). */
  clusterSectors: number;
  batEntries: number;
  /** The virtual size in 512-byte sectors. */
  sectors: number;
  /** Non-zero while an image is open for writing (not closed cleanly). */
  inUse: number;
  /** Where the data begins, in sectors. */
  dataOffset: number;
}

/** Parses the first 64 bytes of a Parallels image; throws unless it is a cleanly closed version 2 image. */
export function parallelsHeader(h: Buffer): ParallelsHeader {
  if (h.length < 64) throw new Error('a Parallels image header is 64 bytes');
  const p: ParallelsHeader = {
    magic: h.toString('latin1', 0, 16),
    version: h.readUInt32LE(16),
    heads: h.readUInt32LE(20),
    cylinders: h.readUInt32LE(24),
    clusterSectors: h.readUInt32LE(28),
    batEntries: h.readUInt32LE(32),
    sectors: Number(h.readBigUInt64LE(36)),
    inUse: h.readUInt32LE(44),
    dataOffset: h.readUInt32LE(48),
  };
  if (p.magic !== 'WithouFreSpacExt' || p.version !== 2) throw new Error(`not an expanding Parallels image (magic ${JSON.stringify(p.magic)}, version ${p.version})`);
  if (p.inUse !== 0) throw new Error('the Parallels image was not closed cleanly');
  if (p.clusterSectors === 0 || p.batEntries !== Math.ceil(p.sectors / p.clusterSectors)) throw new Error('inconsistent Parallels image header');
  return p;
}

export interface DiskDescriptorOptions {
  /** The disk's name (Disk_Parameters/Name). */
  name: string;
  /** The data file's name, relative to the .hdd directory. */
  dataFile: string;
  /** Geometry and cluster size of the data file, from its header. */
  header: ParallelsHeader;
  /** The disk's UID (a UUID without braces). */
  uid: string;
}

/**
 * DiskDescriptor.xml of a Parallels .hdd directory: one expanding ("Compressed") image, the base
 * snapshot, over the whole disk. Sizes are in 512-byte sectors; Blocksize is the image's cluster size.
 */
export function parallelsDiskDescriptor(o: DiskDescriptorOptions): string {
  const h = o.header;
  return [
    "<?xml version='1.0' encoding='UTF-8'?>",
    '<Parallels_disk_image Version="1.0">',
    '    <Disk_Parameters>',
    `        <Disk_size>${h.sectors}</Disk_size>`,
    `        <Cylinders>${Math.floor(h.sectors / (PARALLELS_HEADS * PARALLELS_SECTORS_PER_TRACK))}</Cylinders>`,
    '        <PhysicalSectorSize>512</PhysicalSectorSize>',
    `        <Heads>${PARALLELS_HEADS}</Heads>`,
    `        <Sectors>${PARALLELS_SECTORS_PER_TRACK}</Sectors>`,
    '        <Padding>0</Padding>',
    '        <Encryption>',
    `            <Engine>${NULL_GUID}</Engine>`,
    '            <Data></Data>',
    '        </Encryption>',
    `        <UID>{${o.uid}}</UID>`,
    `        <Name>${xml(o.name)}</Name>`,
    '        <Miscellaneous>',
    '            <CompatLevel>level2</CompatLevel>',
    '            <Bootable>1</Bootable>',
    '            <SuspendState>0</SuspendState>',
    '        </Miscellaneous>',
    '    </Disk_Parameters>',
    '    <StorageData>',
    '        <Storage>',
    '            <Start>0</Start>',
    `            <End>${h.sectors}</End>`,
    `            <Blocksize>${h.clusterSectors}</Blocksize>`,
    '            <Image>',
    `                <GUID>${PARALLELS_BASE_SNAPSHOT}</GUID>`,
    '                <Type>Compressed</Type>',
    `                <File>${xml(o.dataFile)}</File>`,
    '            </Image>',
    '        </Storage>',
    '    </StorageData>',
    '    <Snapshots>',
    '        <Shot>',
    `            <GUID>${PARALLELS_BASE_SNAPSHOT}</GUID>`,
    `            <ParentGUID>${NULL_GUID}</ParentGUID>`,
    '        </Shot>',
    '    </Snapshots>',
    '</Parallels_disk_image>',
    '',
  ].join('\n');
}

export interface ParallelsConfigOptions {
  /** The VM's name. */
  name: string;
  /** The hard disk directory, relative to the .pvm bundle (`<name>.hdd`). */
  hdd: string;
  /** The disk's virtual size and the size of its data file, in bytes. */
  diskBytes: number;
  dataBytes: number;
  vmUuid: string;
  hddUuid: string;
  /** 12 hex digits. */
  mac: string;
  /** Seconds since the epoch (VmCreationDate). */
  mtime: number;
  memoryMiB?: number;
  cpus?: number;
}

/** Values of the Parallels XML model used below (libprlsdk PrlEnums.h, PrlOses.h). */
const PRL = {
  OS_TYPE_LINUX: 0x09,
  OS_LINUX_KERNEL_2_6: 0x0905, // "Other Linux kernel 2.6"; Parallels allows SATA disks for it
  DEVICE_HARD_DISK: 6,
  CPU_MODE_64: 1,
  ACCELERATION_HIGH: 2,
  EMULATED_IMAGE_FILE: 1,
  INTERFACE_SATA: 2,
  DISK_EXPANDING: 1,
  DISK_VERSION_2: 2,
  NET_SHARED: 1, // Shared Networking: NAT to the host's network
  NET_VIRTIO: 3,
} as const;

/**
 * config.pvs of a Parallels VM (schemaVersion 1.0, the layout of Parallels Desktop 10 and later):
 * Linux 64-bit, the CPUs and memory, BIOS boot from the one hard disk (an expanding image on SATA
 * port 0, the bundle's hdd directory), one virtio network adapter on Shared Networking (NAT). Each
 * section written carries every element the XML model requires of it (a missing one fails the
 * load); the sections left out (Security, Tools, Video, ...) take Parallels' defaults.
 */
export function parallelsConfig(o: ParallelsConfigOptions): string {
  const memory = o.memoryMiB ?? VM_MEMORY_MIB;
  const cpus = o.cpus ?? VM_CPUS;
  if (!/^[0-9A-F]{12}$/.test(o.mac)) throw new Error(`invalid MAC address ${o.mac}`);
  const created = new Date(o.mtime * 1000).toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, '');
  const hdd = xml(o.hdd);
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<ParallelsVirtualMachine schemaVersion="1.0" dyn_lists="VirtualAppliance 0">',
    '   <AppVersion>10.3.0-29227</AppVersion>',
    '   <ValidRc>0</ValidRc>',
    '   <Identification dyn_lists="">',
    `      <VmUuid>{${o.vmUuid}}</VmUuid>`,
    `      <SourceVmUuid>{${o.vmUuid}}</SourceVmUuid>`,
    `      <VmName>${xml(o.name)}</VmName>`,
    '      <ServerUuid></ServerUuid>',
    '      <ServerHost></ServerHost>',
    `      <VmCreationDate>${created}</VmCreationDate>`,
    '   </Identification>',
    '   <Settings dyn_lists="">',
    '      <General dyn_lists="PrevOsNumber">',
    `         <OsType>${PRL.OS_TYPE_LINUX}</OsType>`,
    `         <OsNumber>${PRL.OS_LINUX_KERNEL_2_6}</OsNumber>`,
    '         <IsTemplate>0</IsTemplate>',
    '      </General>',
    '      <Startup dyn_lists="">',
    '         <AutoStart>0</AutoStart>',
    '         <WindowMode>0</WindowMode>',
    '         <BootingOrder dyn_lists="BootDevice 1">',
    '            <BootDevice id="0" dyn_lists="">',
    '               <Index>0</Index>',
    `               <Type>${PRL.DEVICE_HARD_DISK}</Type>`,
    '               <BootingNumber>0</BootingNumber>',
    '               <InUse>1</InUse>',
    '            </BootDevice>',
    '         </BootingOrder>',
    '         <Bios dyn_lists="">',
    '            <EfiEnabled>0</EfiEnabled>',
    '         </Bios>',
    '      </Startup>',
    '   </Settings>',
    '   <Hardware dyn_lists="Fdd 0 CdRom 0 Hdd 1 Serial 0 Parallel 0 Printer 0 NetworkAdapter 1 Sound 0 USB 0 PciVideoAdapter 0 GenericDevice 0 GenericPciDevice 0 GenericScsiDevice 0">',
    '      <Cpu dyn_lists="">',
    `         <Number>${cpus}</Number>`,
    `         <Mode>${PRL.CPU_MODE_64}</Mode>`,
    `         <AccelerationLevel>${PRL.ACCELERATION_HIGH}</AccelerationLevel>`,
    '         <EnableVTxSupport>1</EnableVTxSupport>',
    '      </Cpu>',
    '      <Memory dyn_lists="">',
    `         <RAM>${memory}</RAM>`,
    '      </Memory>',
    '      <Hdd id="0" dyn_lists="Partition 0">',
    `         <Uuid>{${o.hddUuid}}</Uuid>`,
    '         <Index>0</Index>',
    '         <Enabled>1</Enabled>',
    '         <Connected>1</Connected>',
    `         <EmulatedType>${PRL.EMULATED_IMAGE_FILE}</EmulatedType>`,
    `         <SystemName>${hdd}</SystemName>`,
    `         <UserFriendlyName>${hdd}</UserFriendlyName>`,
    '         <Remote>0</Remote>',
    `         <InterfaceType>${PRL.INTERFACE_SATA}</InterfaceType>`,
    '         <StackIndex>0</StackIndex>',
    `         <DiskType>${PRL.DISK_EXPANDING}</DiskType>`,
    `         <Size>${Math.ceil(o.diskBytes / MiB)}</Size>`,
    `         <SizeInBytes>${o.diskBytes}</SizeInBytes>`,
    `         <SizeOnDisk>${Math.ceil(o.dataBytes / MiB)}</SizeOnDisk>`,
    '         <Passthrough>0</Passthrough>',
    '         <Splitted>0</Splitted>',
    `         <DiskVersion>${PRL.DISK_VERSION_2}</DiskVersion>`,
    '         <CompatLevel>level2</CompatLevel>',
    '      </Hdd>',
    '      <NetworkAdapter AdapterType_patch="1" id="0" dyn_lists="NetAddress DnsIPAddress SearchDomain">',
    '         <Index>0</Index>',
    '         <Enabled>1</Enabled>',
    '         <Connected>1</Connected>',
    `         <EmulatedType>${PRL.NET_SHARED}</EmulatedType>`,
    '         <SystemName>eth0</SystemName>',
    '         <UserFriendlyName>eth0</UserFriendlyName>',
    '         <Remote>0</Remote>',
    '         <AdapterNumber>-1</AdapterNumber>',
    '         <AdapterName>Default Adapter</AdapterName>',
    `         <MAC>${o.mac}</MAC>`,
    `         <AdapterType>${PRL.NET_VIRTIO}</AdapterType>`,
    '      </NetworkAdapter>',
    '   </Hardware>',
    '</ParallelsVirtualMachine>',
    '',
  ].join('\n');
}
