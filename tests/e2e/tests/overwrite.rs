//! `restore --overwrite` keeps the old VM until the new one is complete: the old VM is renamed
//! aside (`<name>-replaced-<UTC>`) while the new one is built in a folder of its own, destroyed
//! once the new VM is complete, and put back (name and power state) when the restore fails or
//! is interrupted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use safekeeping_e2e::{files_under, Lab};

/// A lab with one backed-up VM `src` (two disks with data, two NICs) and a powered-on VM
/// `victim` with the same disk layout and other data; returns src's digests.
fn lab_with_victim() -> (Lab, Vec<String>) {
    let lab = Lab::up();
    lab.create_vm("src", &["16M", "8M"], &["VM Network", "DC0_DVPG0"]);
    lab.guest_write("src", 0, "0", "3M", Some(7));
    lab.guest_write("src", 1, "0", "1M", Some(8));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:src"]).ok();
    let src = lab.digests("src", 2);
    lab.create_vm("victim", &["16M", "8M"], &["VM Network"]);
    lab.guest_write("victim", 0, "0", "2M", Some(21));
    lab.guest_write("victim", 1, "0", "2M", Some(22));
    assert_ne!(lab.digests("victim", 2), src);
    (lab, src)
}

/// Names of every VM in the lab.
fn vm_names(lab: &Lab) -> Vec<String> {
    let j = lab.lab(&["status"]).ok().json();
    j["lab"]["vms"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts there is exactly one VM named `name` and none named `name-replaced-*`.
fn one_vm_and_none_aside(lab: &Lab, name: &str) {
    let names = vm_names(lab);
    assert_eq!(
        names.iter().filter(|n| *n == name).count(),
        1,
        "exactly one VM `{name}`: {names:?}"
    );
    let prefix = format!("{name}-replaced-");
    assert!(
        !names.iter().any(|n| n.starts_with(&prefix)),
        "no VM set aside is left: {names:?}"
    );
}

/// The local folder of datastore `ds` (from the fake VDDK's `fake.datastore.<ds>` key).
fn datastore_dir(lab: &Lab, ds: &str) -> PathBuf {
    let conf = std::fs::read_to_string(lab.dir().join("vddk/vddk.conf")).unwrap();
    let key = format!("fake.datastore.{ds}");
    let value = conf
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("vddk.conf has {key}:\n{conf}"));
    PathBuf::from(value)
}

/// The folder of a VM's `.vmx` (`[ds] folder/name.vmx` -> `folder`).
fn vmx_folder(lab: &Lab, vm: &str) -> String {
    let info = lab.vm_info(vm).expect("VM exists");
    let path = info["vmx_path"].as_str().unwrap().to_string();
    let rel = path.split_once("] ").map(|(_, r)| r).unwrap_or(&path);
    rel.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

fn overwrite(lab: &Lab, mode: &str) -> safekeeping_e2e::Run {
    lab.sk(&[
        "--json",
        "restore",
        "vm:src",
        "--mode",
        mode,
        "--name",
        "victim",
        "--overwrite",
        "--force",
    ])
}

#[test]
fn overwrite_replaces_the_vm_only_when_the_new_one_is_complete() {
    let (lab, src) = lab_with_victim();
    let old = lab.vm_info("victim").unwrap();
    assert_eq!(old["power_state"], "poweredOn");
    assert_eq!(vmx_folder(&lab, "victim"), "victim");
    let r = overwrite(&lab, "create").ok();
    assert!(r.stderr.contains("victim-replaced-"), "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["name"], "victim");
    assert!(j.get("replaced_vm_left").is_none(), "{j}");
    one_vm_and_none_aside(&lab, "victim");
    let new = lab.vm_info("victim").unwrap();
    assert_ne!(new["moref"], old["moref"], "a new VM");
    assert_eq!(j["moref"], new["moref"]);
    assert_eq!(lab.digests("victim", 2), src);
    // The old VM's folder existed while the new VM was built: the new one has its own.
    assert_eq!(vmx_folder(&lab, "victim"), "victim_1");
    for d in new["disks"].as_array().unwrap() {
        let f = d["path"].as_str().unwrap_or_default();
        assert!(
            f.starts_with("[datastore1] victim_1/"),
            "disk in the new folder: {d}"
        );
    }

    // Again: the old VM (now in victim_1) is replaced by one in a free folder.
    lab.sk(&[
        "restore",
        "vm:src",
        "--name",
        "victim",
        "--overwrite",
        "--force",
    ])
    .ok();
    one_vm_and_none_aside(&lab, "victim");
    assert_eq!(lab.digests("victim", 2), src);
    lab.sk(&["check"]).ok();
}

#[test]
fn a_failed_overwrite_puts_the_old_vm_back() {
    let (lab, _) = lab_with_victim();
    let old = lab.vm_info("victim").unwrap();
    let old_digests = lab.digests("victim", 2);
    let ds = datastore_dir(&lab, "datastore1");

    // Damage one of src's chunks: the restore fails reading it, after the new VM was created.
    // Any chunk will do (every one holds data of src's disks), so it is taken from the
    // repository's chunks/ rather than computed: content-defined chunks (the default) are cut
    // where the repository's seeded hash says.
    let mut chunks = files_under(&lab.dir().join("repo/chunks"));
    chunks.sort();
    assert!(
        chunks.len() >= 2,
        "src's 4 MiB of data in chunks: {chunks:?}"
    );
    let chunk = chunks[0].clone();
    let id = chunk.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        id.len(),
        64,
        "a chunk file is named by its id: {}",
        chunk.display()
    );
    let original = std::fs::read(&chunk).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&chunk, &bad).unwrap();

    for mode in ["create", "import"] {
        let r = overwrite(&lab, mode);
        assert_eq!(r.code, 1, "{mode}: {}", r.all_output());
        assert!(
            r.stderr.contains(&id),
            "{mode}: names the chunk: {}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("partially restored VM `victim` was destroyed"),
            "{mode}: {}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("the old VM was put back as `victim` and powered on again"),
            "{mode}: {}",
            r.stderr
        );
        one_vm_and_none_aside(&lab, "victim");
        let now = lab.vm_info("victim").unwrap();
        assert_eq!(now["moref"], old["moref"], "{mode}: the old VM");
        assert_eq!(now["power_state"], "poweredOn", "{mode}");
        assert_eq!(now["vmx_path"], old["vmx_path"], "{mode}");
        assert_eq!(lab.digests("victim", 2), old_digests, "{mode}");
        assert!(
            !ds.join("victim_1").exists(),
            "{mode}: the folder claimed for the new VM was deleted"
        );
    }

    // Repaired; a VDDK write error instead (every disk's first sectors) puts it back too.
    std::fs::write(&chunk, &original).unwrap();
    lab.vddk_conf_append("fake.fail_write_sectors = 0-7");
    let r = overwrite(&lab, "create");
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(
        r.stderr.contains("write")
            && r.stderr
                .contains("the old VM was put back as `victim` and powered on again"),
        "{}",
        r.stderr
    );
    one_vm_and_none_aside(&lab, "victim");
    assert_eq!(lab.vm_info("victim").unwrap()["moref"], old["moref"]);
    assert_eq!(lab.digests("victim", 2), old_digests);
    lab.vddk_conf_remove("fake.fail_write_sectors");

    // Now the same restore replaces it.
    overwrite(&lab, "create").ok();
    one_vm_and_none_aside(&lab, "victim");
    assert_ne!(lab.vm_info("victim").unwrap()["moref"], old["moref"]);
}

#[test]
fn an_interrupted_overwrite_puts_the_old_vm_back() {
    let (lab, _) = lab_with_victim();
    let old = lab.vm_info("victim").unwrap();
    let old_digests = lab.digests("victim", 2);
    lab.vddk_conf_append("fake.write_latency_ms = 3000");
    let child = lab.sk_spawn(&[
        "restore",
        "vm:src",
        "--name",
        "victim",
        "--overwrite",
        "--force",
    ]);
    // Wait until the old VM is set aside and the new one exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the new VM never appeared");
        let names = vm_names(&lab);
        if names.iter().any(|n| n.starts_with("victim-replaced-"))
            && names.iter().any(|n| n == "victim")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (code, stderr) = safekeeping_e2e::stop_with("INT", child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("the old VM was put back"), "{stderr}");
    lab.vddk_conf_remove("fake.write_latency_ms");
    one_vm_and_none_aside(&lab, "victim");
    let now = lab.vm_info("victim").unwrap();
    assert_eq!(now["moref"], old["moref"]);
    assert_eq!(now["power_state"], "poweredOn");
    assert_eq!(lab.digests("victim", 2), old_digests);
}

#[test]
fn import_never_writes_into_an_existing_folder() {
    let (lab, src) = lab_with_victim();
    let ds = datastore_dir(&lab, "datastore1");
    let old_vmx = ds.join("victim/victim.vmx");
    assert!(old_vmx.exists(), "{}", old_vmx.display());
    let r = overwrite(&lab, "import").ok();
    assert_eq!(r.json()["mode"], "import");
    one_vm_and_none_aside(&lab, "victim");
    assert_eq!(lab.digests("victim", 2), src);
    assert_eq!(
        vmx_folder(&lab, "victim"),
        "victim_1",
        "the new VM's files went to a folder of their own"
    );
    assert!(
        !ds.join("victim").exists(),
        "the old VM's folder went with the old VM"
    );

    // An orphan folder of the restore's name (no VM) is not written into either.
    let orphan = ds.join("orphan");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("orphan.vmx"), b"keep me\n").unwrap();
    lab.sk(&["restore", "vm:src", "--mode", "import", "--name", "orphan"])
        .ok();
    assert_eq!(
        std::fs::read(orphan.join("orphan.vmx")).unwrap(),
        b"keep me\n"
    );
    assert_eq!(vmx_folder(&lab, "orphan"), "orphan_1");
    assert_eq!(lab.digests("orphan", 2), src);
}
