//! Snapshots as ESXi makes them: CreateSnapshot gives each disk an empty delta child
//! (`NAME-00000N.vmdk`) that the VM writes to from then on, the snapshot keeps the file below
//! frozen, RemoveSnapshot merges the delta back, and the fake VDDK reads a snapshot's disk
//! through its chain.
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use vddk::{ConnectOptions, ConnectParams, Credentials, OpenFlags, Vddk};

const K64: u64 = 65536;
const M: u64 = 1 << 20;

fn snapshot(s: &Soap, vm: &str, name: &str) -> String {
    let info = s.task(&format!(
        "<CreateSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <name>{name}</name><memory>false</memory><quiesce>false</quiesce></CreateSnapshot_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
    between(&info, "type=\"VirtualMachineSnapshot\">", "<").expect("snapshot moref")
}

fn remove(s: &Soap, snap: &str) {
    let info = s.task(&format!(
        "<RemoveSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachineSnapshot\">{snap}</_this>\
         <removeChildren>false</removeChildren></RemoveSnapshot_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
}

/// The file a snapshot's config names for its first disk.
fn snapshot_file(s: &Soap, snap: &str) -> String {
    let devices = s.property("VirtualMachineSnapshot", snap, "config.hardware.device");
    let disk = devices
        .split(":type=\"VirtualDisk\"")
        .nth(1)
        .expect("a disk in the snapshot's config")
        .to_string();
    between(&disk, "<fileName>", "<").unwrap()
}

/// Bytes the file system really allocated for a file (not its apparent size).
fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// Allocated bytes of every file in a folder.
fn folder_allocated(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| allocated(&e.unwrap().path()))
        .sum()
}

fn current_disk(lab: &Lab, vm: &str) -> String {
    lab.vm_info(vm)["disks"][0]["path"]
        .as_str()
        .unwrap()
        .to_string()
}

fn deltas_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-00000"))
        .collect();
    v.sort();
    v
}

#[test]
fn creating_a_snapshot_copies_nothing_whatever_the_disk_size() {
    let lab = Lab::up();
    let s = lab.soap();
    // 16 MiB written on an 8 GiB disk and on a 16 MiB one: a copying snapshot would write
    // 16 MiB more; a delta is a bitmap of a few KiB (a hole until written) whatever the size.
    for (name, size) in [("big", "8G"), ("small", "16M")] {
        let vm = lab
            .run(&["create-vm", "--name", name, "--disk", size])
            .trim()
            .to_string();
        lab.write(name, 0, 0, 16 * M, 1);
        let folder = local(&lab, &current_disk(&lab, name))
            .parent()
            .unwrap()
            .to_path_buf();
        let before = folder_allocated(&folder);
        let snap = snapshot(&s, &vm, "s1");
        let delta = current_disk(&lab, name);
        assert_eq!(delta, format!("[datastore1] {name}/{name}-000001.vmdk"));
        assert_eq!(
            snapshot_file(&s, &snap),
            format!("[datastore1] {name}/{name}.vmdk")
        );
        let desc = std::fs::read_to_string(local(&lab, &delta)).unwrap();
        assert!(
            desc.contains("parentFileNameHint=\"") && desc.contains(&format!("\"{name}.vmdk\"")),
            "{desc}"
        );
        assert!(desc.contains("createType=\"vmfsSparse\""), "{desc}");
        let extent = folder.join(format!("{name}-000001-delta.vmdk"));
        assert!(
            allocated(&extent) <= 64 * 1024,
            "{name}: a fresh delta holds no data ({} bytes allocated)",
            allocated(&extent)
        );
        let grown = folder_allocated(&folder) - before;
        assert!(
            grown <= 256 * 1024,
            "{name}: CreateSnapshot allocated {grown} bytes in the VM's folder"
        );
    }
}

#[test]
fn guest_writes_go_to_the_delta_and_removal_consolidates_a_three_deep_chain() {
    let lab = Lab::up();
    let s = lab.soap();
    let vm = lab
        .run(&["create-vm", "--name", "w", "--disk", "8M"])
        .trim()
        .to_string();
    let folder = local(&lab, &current_disk(&lab, "w"))
        .parent()
        .unwrap()
        .to_path_buf();
    lab.write("w", 0, 0, 3 * M, 1);
    let d0 = lab.digest("w", 0);
    let base_flat = folder.join("w-flat.vmdk");
    let base_digest = sha256_hex(&std::fs::read(&base_flat).unwrap());

    // Three snapshots, each followed by writes that are not grain aligned (copy on write)
    // and one that overwrites data with zeros (must not read through to the parent).
    let s1 = snapshot(&s, &vm, "s1");
    lab.write("w", 0, 100_000, 70_000, 2);
    let d1 = lab.digest("w", 0);
    let s2 = snapshot(&s, &vm, "s2");
    lab.run(&[
        "guest-write",
        "--vm",
        "w",
        "--disk",
        "0",
        "--offset",
        "0",
        "--len",
        "4096",
        "--zero",
    ]);
    lab.write("w", 0, 5 * M + 17, 1000, 3);
    let d2 = lab.digest("w", 0);
    let s3 = snapshot(&s, &vm, "s3");
    lab.write("w", 0, 8 * M - 512, 512, 4);
    lab.write("w", 0, 2 * M - 10, 20, 5);
    let d3 = lab.digest("w", 0);
    assert!(d0 != d1 && d1 != d2 && d2 != d3);

    // Each snapshot's disk reads as the VM's disk did when it was taken; the base file
    // itself was never written after the first snapshot.
    let (f1, f2, f3) = (
        snapshot_file(&s, &s1),
        snapshot_file(&s, &s2),
        snapshot_file(&s, &s3),
    );
    assert_eq!(f1, "[datastore1] w/w.vmdk");
    assert_eq!(f2, "[datastore1] w/w-000001.vmdk");
    assert_eq!(f3, "[datastore1] w/w-000002.vmdk");
    assert_eq!(current_disk(&lab, "w"), "[datastore1] w/w-000003.vmdk");
    assert_eq!(lab.digest_path(&f1), d0);
    assert_eq!(lab.digest_path(&f2), d1);
    assert_eq!(lab.digest_path(&f3), d2);
    assert_eq!(sha256_hex(&std::fs::read(&base_flat).unwrap()), base_digest);
    let d3_desc = std::fs::read_to_string(folder.join("w-000003.vmdk")).unwrap();
    assert!(
        d3_desc.contains("parentFileNameHint=\"w-000002.vmdk\""),
        "{d3_desc}"
    );

    // The fake VDDK opens the snapshot's disk through its chain, as VDDK does, and
    // QueryAllocatedBlocks answers for the whole chain.
    let root = lab.dir.parent().unwrap().join("vddk-fresh");
    let vddk = Vddk::load(&fresh_fake(&root)).unwrap();
    vddk.init(Some(&lab.dir.join("vddk/vddk.conf"))).unwrap();
    let whole = |moref: &str, snap: Option<&str>, path: &str| -> (String, Vec<(u64, u64)>) {
        read_through_vddk(&lab, &vddk, moref, snap, path)
    };
    let (v2, blocks2) = whole(&vm, Some(&s3), &f3);
    assert_eq!(v2, d2, "the fake VDDK reads s3's frozen chain");
    let (v3, blocks3) = whole(&vm, None, "[datastore1] w/w-000003.vmdk");
    assert_eq!(v3, d3, "and the current delta's");
    let mib = M / 512;
    // 3 MiB in the base, grains 1-2 in s1's delta, 0 and 80 in s2's; widened to 1 MiB.
    assert_eq!(blocks2, vec![(0, 3 * mib), (5 * mib, mib)]);
    // The current delta adds grains 31-32 and 127.
    assert_eq!(blocks3, vec![(0, 3 * mib), (5 * mib, mib), (7 * mib, mib)]);

    // Removing the newest snapshot merges the current delta into s3's file: the VM's disk
    // is that file again, reads the latest data, and the delta is gone.
    remove(&s, &s3);
    assert_eq!(current_disk(&lab, "w"), f3);
    assert_eq!(lab.digest("w", 0), d3);
    assert!(!folder.join("w-000003.vmdk").exists());
    assert!(!folder.join("w-000003-delta.vmdk").exists());
    // Removing the oldest merges the delta above the base into it; s2 now keeps the base.
    remove(&s, &s1);
    assert_eq!(snapshot_file(&s, &s2), f1);
    assert_eq!(lab.digest_path(&f1), d1, "s2 still reads as it was taken");
    assert_eq!(lab.digest("w", 0), d3);
    let top = std::fs::read_to_string(local(&lab, &current_disk(&lab, "w"))).unwrap();
    assert!(top.contains("parentFileNameHint=\"w.vmdk\""), "{top}");
    // The last one: the VM is back on its base, which holds everything.
    remove(&s, &s2);
    assert_eq!(current_disk(&lab, "w"), f1);
    assert_eq!(lab.digest("w", 0), d3);
    assert_eq!(deltas_in(&folder), Vec::<String>::new());
    lab.write("w", 0, 0, 10, 6);
    assert_ne!(lab.digest("w", 0), d3, "writes land in the base again");
}

#[test]
fn remove_all_snapshots_consolidates_every_delta() {
    let lab = Lab::up();
    let s = lab.soap();
    let vm = lab
        .run(&["create-vm", "--name", "r", "--disk", "4M", "--disk", "2M"])
        .trim()
        .to_string();
    let bases: Vec<serde_json::Value> = lab.vm_info("r")["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].clone())
        .collect();
    for i in 0..3u64 {
        snapshot(&s, &vm, &format!("s{i}"));
        lab.write("r", 0, i * 300_000, 5000, 10 + i);
        lab.write("r", 1, i * K64, K64, 20 + i);
    }
    let (a, b) = (lab.digest("r", 0), lab.digest("r", 1));
    let info = s.task(&format!(
        "<RemoveAllSnapshots_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         </RemoveAllSnapshots_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
    let disks = lab.vm_info("r")["disks"].clone();
    assert_eq!(disks[0]["path"], bases[0]);
    assert_eq!(disks[1]["path"], bases[1]);
    assert_eq!((lab.digest("r", 0), lab.digest("r", 1)), (a, b));
    let folder = local(&lab, "[datastore1] r/r.vmdk")
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(deltas_in(&folder), Vec::<String>::new());
}

/// Reads a whole disk through the fake VDDK: its SHA-256 and QueryAllocatedBlocks' answer
/// in 1 MiB chunks, as (offset, length) in sectors.
fn read_through_vddk(
    lab: &Lab,
    vddk: &Vddk,
    vm: &str,
    snapshot: Option<&str>,
    path: &str,
) -> (String, Vec<(u64, u64)>) {
    let json = lab.json();
    let password = std::fs::read_to_string(lab.dir.join("password")).unwrap();
    let params = ConnectParams::vm(vm)
        .server("127.0.0.1")
        .port(json["port"].as_u64().unwrap() as u16)
        .thumbprint(json["thumbprint_sha1"].as_str().unwrap())
        .credentials(Credentials::UserPassword {
            user: json["user"].as_str().unwrap().to_string(),
            password: password.trim_end().to_string(),
        });
    let options = ConnectOptions {
        read_only: true,
        snapshot_moref: snapshot.map(str::to_string),
        ..ConnectOptions::default()
    };
    let conn = vddk.connect(&params, &options).unwrap();
    let mut disk = conn.open(path, OpenFlags::READ_ONLY).unwrap();
    let sectors = disk.info().capacity_sectors;
    let mut data = vec![0u8; (sectors * 512) as usize];
    disk.read(0, &mut data).unwrap();
    let blocks = disk
        .query_allocated_blocks(0, sectors, M / 512)
        .unwrap()
        .into_iter()
        .map(|b| (b.offset, b.length))
        .collect();
    disk.close().unwrap();
    conn.disconnect().unwrap();
    (sha256_hex(&data), blocks)
}
