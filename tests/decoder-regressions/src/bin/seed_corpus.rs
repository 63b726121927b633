//! Writes a seed corpus for every fuzz target: `seed-corpus <DIR>` fills `<DIR>/<target>/`.
//!
//! Seeds are made by the real writers (a repository with a committed generation, the sample
//! configuration, a `.vmx`, a descriptor), plus the recorded vCenter responses in
//! `shared/fixtures/vcenter-soap` when present. They are never committed: the corpus folder
//! is ignored by git, only minimised crash inputs under `fuzz/regressions/` are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use repository_format::blob::{BlobKind, Codec};
use repository_format::{
    Area, BackupMode, DiskDescriptor, EncryptionMode, GenerationStatus, InitOptions, KdfParams,
    MemorySource, Passphrase, Repository, TargetIdentity, TargetKind,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: seed-corpus <DIR> (the corpus folder, e.g. fuzz/corpus)")?,
    );
    let mut n = 0usize;
    let mut put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        n += 1;
        Ok(())
    };

    // Repository files written by the repository itself.
    let tmp = std::env::temp_dir().join(format!("seed-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let repo = Repository::init(
        &tmp,
        &InitOptions {
            chunk_size: 64 * 1024,
            ..Default::default()
        },
    )?;
    let lock = repo.lock_shared(Duration::from_secs(5))?;
    let mut id = TargetIdentity::new(TargetKind::Vm, "web01");
    id.instance_uuid = Some("5012abcd-0000-1111-2222-333344445555".into());
    let key = id.key()?;
    let mut w = repo.begin_generation(
        &lock,
        repo.lock_target(&key, Duration::ZERO)?,
        id,
        BackupMode::Full,
        None,
    )?;
    let mut data = vec![0u8; 300_000];
    for (i, b) in data.iter_mut().enumerate().skip(70_000) {
        *b = (i * 7 % 251) as u8;
    }
    let mut disk = MemorySource::new(data);
    let mut d = DiskDescriptor::new(2000, 300_000);
    d.label = "Hard disk 1".into();
    w.ingest_disk(d, None, &[Area::new(0, 300_000)], &mut disk, &|_| {})?;
    w.put_metadata("vm.vmx", VMX.as_bytes())?;
    let gen = w.commit(GenerationStatus::Succeeded, Default::default())?;
    let gen_dir = tmp
        .join("targets")
        .join(key.as_str())
        .join(gen.folder_name());
    let manifest = std::fs::read(gen_dir.join("manifest"))?;
    let config = std::fs::read(tmp.join("config"))?;
    let index = std::fs::read(gen_dir.join("disk-2000.fidx"))?;
    let codec = Codec::new(0, None);
    let payload = |kind, bytes: &[u8]| codec.decode(kind, bytes, 64 << 20);
    put("repo_manifest", "raw", &prefixed(0, &manifest))?;
    put(
        "repo_manifest",
        "json",
        &prefixed(2, &payload(BlobKind::Manifest, &manifest)?),
    )?;
    put("repo_config", "raw", &prefixed(0, &config))?;
    put(
        "repo_config",
        "json",
        &prefixed(1, &payload(BlobKind::Config, &config)?),
    )?;
    put("repo_fixed_index", "raw", &prefixed(0, &index))?;
    put(
        "repo_fixed_index",
        "payload",
        &prefixed(2, &payload(BlobKind::Index, &index)?),
    )?;
    put(
        "repo_fixed_index",
        "built",
        &[3, 0, 5, 17, 1, 2, 3, 4, 5, 6],
    )?;
    // Version 4: a disk of 40 blocks with three chunks in two runs (see the harness's mode 4).
    let entry = |id: u8, len: u32| {
        let mut e = vec![id; 32];
        e.extend_from_slice(&len.to_le_bytes());
        e
    };
    let run =
        |first: u64, n: u32| [first.to_le_bytes().to_vec(), n.to_le_bytes().to_vec()].concat();
    let v4_body = [
        run(0, 2),
        entry(1, 16384),
        entry(2, 8192),
        run(20 * 4096, 1),
        entry(3, 32768),
    ]
    .concat();
    put(
        "repo_fixed_index",
        "v4-runs",
        &[&[4u8, 40, 0, 3][..], &v4_body].concat(),
    )?;
    put(
        "repo_fixed_index",
        "v4-built",
        &[5, 40, 1, 0, 20, 3, 0, 3, 1, 1, 0, 7, 4, 9, 1, 2, 0],
    )?;
    let cdc_dir = tmp.join("content-defined");
    Repository::init(&cdc_dir, &InitOptions::content_defined())?;
    let cdc_config = std::fs::read(cdc_dir.join("config"))?;
    put(
        "repo_config",
        "json-v4",
        &prefixed(1, &payload(BlobKind::Config, &cdc_config)?),
    )?;
    put(
        "repo_blob",
        "index",
        &prefixed(1, &[0].iter().chain(&index).copied().collect::<Vec<_>>()),
    )?;
    put(
        "repo_blob",
        "config",
        &prefixed(3, &[2].iter().chain(&config).copied().collect::<Vec<_>>()),
    )?;
    for entry in walk(&tmp.join("chunks"))?.into_iter().take(3) {
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("chunk")
            .to_string();
        let bytes = std::fs::read(&entry)?;
        put(
            "repo_blob",
            &format!("chunk-{}", &name[..8.min(name.len())]),
            &[0, 0].iter().chain(&bytes).copied().collect::<Vec<_>>(),
        )?;
    }
    drop(lock);
    let _ = std::fs::remove_dir_all(&tmp);

    // A genuine key file of an encrypted repository.
    let options = InitOptions {
        encryption: EncryptionMode::Aes256Gcm,
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    Repository::init_with(
        &tmp,
        &options,
        Some(&Passphrase::from_bytes(b"seed".to_vec())),
    )?;
    for entry in walk(&tmp.join("keys"))? {
        let bytes = std::fs::read(&entry)?;
        put("repo_key_file", "alone", &prefixed(0, &bytes))?;
        put("repo_key_file", "beside", &prefixed(1, &bytes))?;
        put("repo_key_file", "patched", &prefixed(2, &bytes))?;
    }
    let _ = std::fs::remove_dir_all(&tmp);

    // Recorded vCenter responses.
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/vcenter-soap");
    if let Ok(entries) = std::fs::read_dir(&fixtures) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".response.xml") {
                let bytes = std::fs::read(e.path())?;
                put("soap_response", &name, &bytes)?;
                if bytes
                    .windows(8)
                    .any(|w| w == b"hardware" || w == b"snapshot" || w == b"changedA")
                {
                    put("vm_config_view", &name, &bytes)?;
                }
            }
        }
    } else {
        eprintln!(
            "note: {} not found; SOAP seeds are the built-in ones only",
            fixtures.display()
        );
    }
    put("soap_response", "tiny", SOAP.as_bytes())?;
    put("vm_config_view", "tiny", CONFIG_INFO.as_bytes())?;

    // NBD: a request header (mode 0) and the payload of NBD_OPT_GO and SET_META_CONTEXT.
    let header = nbd_server::protocol::RequestHeader {
        flags: 0,
        command: nbd_server::protocol::cmd::READ,
        cookie: 1,
        offset: 4096,
        length: 65536,
    };
    put(
        "nbd_request",
        "read",
        &[&[0u8][..], &header.encode()].concat(),
    )?;
    put(
        "nbd_request",
        "go",
        b"\x07\x00\x00\x00\x04disk\x00\x01\x00\x03",
    )?;
    put(
        "nbd_request",
        "meta",
        b"\x0a\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0fbase:allocation",
    )?;
    // Guest disks: an MBR with one Linux partition whose sector 2 holds an ext superblock
    // magic, and a FAT-looking boot sector on the whole disk.
    let mut mbr = vec![0u8; 8192];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&14u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr[1024 + 1024 + 56] = 0x53;
    mbr[1024 + 1024 + 57] = 0xEF;
    put("guest_disk", "mbr-ext", &mbr)?;
    let mut fat = vec![0u8; 8192];
    fat[0] = 0xEB;
    fat[3..11].copy_from_slice(b"MSDOS5.0");
    fat[11..13].copy_from_slice(&512u16.to_le_bytes());
    fat[13] = 1;
    fat[14..16].copy_from_slice(&1u16.to_le_bytes());
    fat[16] = 2;
    fat[17..19].copy_from_slice(&16u16.to_le_bytes());
    fat[19..21].copy_from_slice(&16u16.to_le_bytes());
    fat[21] = 0xF8;
    fat[22..24].copy_from_slice(&1u16.to_le_bytes());
    fat[54..59].copy_from_slice(b"FAT12");
    fat[510] = 0x55;
    fat[511] = 0xAA;
    put("guest_disk", "fat12", &fat)?;

    // Text the administrator writes, and descriptors.
    put("vmdk_descriptor", "vmfs", DESCRIPTOR.as_bytes())?;
    put(
        "vmdk_descriptor",
        "flat",
        DESCRIPTOR
            .replace("vmfs\"", "monolithicFlat\"")
            .replace("VMFS \"web01-flat.vmdk\"", "FLAT \"web01-flat.vmdk\" 0")
            .as_bytes(),
    )?;
    for (i, t) in [
        "vm:web01",
        "vm:vm-42",
        "vm:DC0/vm/prod/web01",
        "vm:4215A0E0-1111-2222-3333-444455556666",
        "ivd:disk1",
        "tag:gold",
        "[ds1] web01/web01.vmx",
    ]
    .iter()
    .enumerate()
    {
        put("target_parser", &format!("t{i}"), t.as_bytes())?;
    }
    put("cli_options", "restore", b"\x00restore\x00vm:web01\x00--network\x00VM Network=DMZ\x00--disk-datastore\x001=fast\x00--mode\x00import")?;
    put(
        "cli_options",
        "backup",
        b"\x01backup\x00vm:a\x00vm:b\x00--parallel\x003\x00--full",
    )?;
    put("cli_options", "size", b"\x0064MiB")?;
    put("cli_options", "pin", b"\x01AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99")?;
    put("cli_options", "url", b"\x02https://[::1]:8989/sdk")?;
    put("config_toml", "sample", CONFIG_TOML.as_bytes())?;
    put(
        "vmx_edit",
        "import",
        &[
            b"\x00web01-restored\x00web01-restored.nvram\x00".as_slice(),
            VMX.as_bytes(),
        ]
        .concat(),
    )?;
    put(
        "vmx_edit",
        "recovery",
        &[b"\x01web01\x00web01.nvram\x00".as_slice(), VMX.as_bytes()].concat(),
    )?;
    println!("wrote {n} seeds under {}", out.display());
    Ok(())
}

fn prefixed(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(bytes);
    v
}

fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            if e.file_type()?.is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

const SOAP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-42</obj><propSet><name>name</name><val xsi:type="xsd:string" xmlns:xsd="http://www.w3.org/2001/XMLSchema">web01</val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;

const CONFIG_INFO: &str = r#"<config xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="VirtualMachineConfigInfo"><name>web01</name><uuid>4215a0e0-1111-2222-3333-444455556666</uuid><version>vmx-19</version><guestId>otherLinux64Guest</guestId><changeTrackingEnabled>true</changeTrackingEnabled><files><vmPathName>[ds1] web01/web01.vmx</vmPathName></files><hardware><numCPU>2</numCPU><memoryMB>1024</memoryMB><device xsi:type="ParaVirtualSCSIController"><key>1000</key><busNumber>0</busNumber></device><device xsi:type="VirtualDisk"><key>2000</key><controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInKB>1024</capacityInKB><capacityInBytes>1048576</capacityInBytes><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] web01/web01.vmdk</fileName><diskMode>persistent</diskMode><thinProvisioned>true</thinProvisioned><changeId>52 aa/1</changeId></backing></device><device xsi:type="VirtualVmxnet3"><key>4000</key><backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName></backing><macAddress>00:50:56:aa:bb:cc</macAddress></device></hardware></config>"#;

const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW 2097152 VMFS \"web01-flat.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"130\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.uuid = \"60 00 C2 9a 11 22 33 44-55 66 77 88 99 aa bb cc\"\n";

const CONFIG_TOML: &str = r#"[vcenter]
url = "https://127.0.0.1:8989/sdk"
user = "backup@vsphere.local"
password_file = "password"
thumbprint_sha256 = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"
[vddk]
libdir = "/opt/vmware-vix-disklib-distrib"
transports = "nbdssl:nbd"
[repository]
path = "/srv/safekeeping"
[defaults]
parallel = 2
lock_wait_seconds = 60
compression_level = 3
"#;

const VMX: &str = ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\ndisplayName = \"web01\"\nnvram = \"web01.nvram\"\nmemSize = \"1024\"\nnumvcpus = \"2\"\nuuid.bios = \"42 15 a0 e0\"\nvc.uuid = \"50 15 11 22\"\nsched.swap.derivedName = \"/vmfs/volumes/ds/web01/web01-1.vswp\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"web01.vmdk\"\nide1:0.present = \"TRUE\"\nide1:0.deviceType = \"cdrom-raw\"\nide0:0.fileName = \"old.vmdk\"\nethernet0.present = \"TRUE\"\nethernet0.networkName = \"VM Network\"\nguestOS = \"ubuntu-64\"\n";
