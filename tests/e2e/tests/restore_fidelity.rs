//! Restore fidelity and snapshot control end to end against the lab:
//! - storage policies (SPBM): a backup records the VM home's and each disk's policy (the lab
//!   keeps associations behind govmomi's PBM simulator), `show` prints them, a restore applies
//!   them by name in create and import mode, `--disk-profile` remaps one disk, `--profile` all,
//!   and an unknown policy is refused before anything is created, naming the ones that exist;
//! - the saved `.nvram` lands in the new VM's folder in create mode (not the fresh one the
//!   lab gives every new VM), and beside the `.vmx` of a restored vApp's child;
//! - a quiesced snapshot of a Windows guest carries the `[vss]` options and the quiesce
//!   timeout (`CreateSnapshotEx_Task`, recorded by the lab), a Linux guest only the timeout;
//! - `compression_level` per target: the same content stored at two levels takes different
//!   room.

use std::path::{Path, PathBuf};

use safekeeping_e2e::Lab;

fn with_section(lab: &Lab, file: &str, section: &str) -> PathBuf {
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let p = lab.dir().join(file);
    std::fs::write(&p, format!("{text}\n{section}\n")).unwrap();
    p
}

fn json_file(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn policies(lab: &Lab, vm: &str) -> serde_json::Value {
    json_file(&lab.dir().join("pbm-associations.json"))[vm].clone()
}

const VSAN: &str = "vSAN Default Storage Policy";
const VVOL: &str = "VVol No Requirements Policy";
const PMEM: &str = "Host-local PMem Default Storage Policy";

#[test]
fn storage_policies_are_kept_remapped_and_checked() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("pol", &["2M", "2M"], &[]);
    lab.guest_write("pol", 0, "0", "1M", Some(3));
    for (disk, policy) in [(None, VVOL), (Some("0"), VSAN), (Some("1"), VVOL)] {
        let mut args = vec!["set-policy", "--vm", "pol", "--policy", policy];
        if let Some(d) = disk {
            args.extend(["--disk", d]);
        }
        lab.lab(&args).ok();
    }
    lab.sk(&["backup", "vm:pol"]).ok();

    // Recorded, and shown in text and JSON.
    let shown = lab.sk(&["--json", "show", "vm:pol"]).ok().json();
    let p = &shown["storage_policies"];
    assert_eq!(p["home"]["name"], VVOL, "{shown}");
    assert_eq!(p["disks"][0]["policy"]["name"], VSAN, "{shown}");
    assert_eq!(p["disks"][1]["policy"]["name"], VVOL, "{shown}");
    assert!(p["disks"][0]["policy"]["id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    let text = lab.sk(&["show", "vm:pol"]).ok().stdout;
    assert!(
        text.contains(&format!("storage policy (VM home): {VVOL}")),
        "{text}"
    );

    // Kept: create mode and import mode.
    lab.sk(&["restore", "vm:pol", "--name", "pol-c"]).ok();
    let c = policies(&lab, "pol-c");
    assert_eq!(c["home"], VVOL, "{c}");
    assert_eq!(c["disks"]["0"], VSAN, "{c}");
    assert_eq!(c["disks"]["1"], VVOL, "{c}");
    lab.sk(&["restore", "vm:pol", "--name", "pol-i", "--mode", "import"])
        .ok();
    let i = policies(&lab, "pol-i");
    assert_eq!(i["home"], VVOL, "{i}");
    assert_eq!(i["disks"]["0"], VSAN, "{i}");
    assert_eq!(i["disks"]["1"], VVOL, "{i}");

    // Remapped: one disk, then everything.
    lab.sk(&[
        "restore",
        "vm:pol",
        "--name",
        "pol-d",
        "--disk-profile",
        &format!("1={PMEM}"),
    ])
    .ok();
    let d = policies(&lab, "pol-d");
    assert_eq!(d["home"], VVOL, "{d}");
    assert_eq!(d["disks"]["0"], VSAN, "{d}");
    assert_eq!(d["disks"]["1"], PMEM, "{d}");
    let r = lab
        .sk(&[
            "--json",
            "restore",
            "vm:pol",
            "--name",
            "pol-a",
            "--profile",
            PMEM,
        ])
        .ok();
    let applied = &r.json()["storage_policies"];
    assert_eq!(applied["home"], PMEM, "{}", r.stdout);
    assert_eq!(applied["disks"][1]["policy"], PMEM, "{}", r.stdout);
    let a = policies(&lab, "pol-a");
    assert_eq!(a["home"], PMEM, "{a}");
    assert_eq!(a["disks"]["0"], PMEM, "{a}");
    assert_eq!(a["disks"]["1"], PMEM, "{a}");

    // Unknown: refused before anything is created, naming the candidates.
    let r = lab
        .sk(&[
            "restore",
            "vm:pol",
            "--name",
            "pol-x",
            "--profile",
            "Platinum",
        ])
        .expect_code(1);
    let out = r.all_output();
    assert!(out.contains("`Platinum`"), "{out}");
    assert!(out.contains(VSAN) && out.contains(VVOL), "{out}");
    assert!(lab.vm_info("pol-x").is_none());
    let r = lab
        .sk(&[
            "restore",
            "vm:pol",
            "--name",
            "pol-y",
            "--disk-profile",
            "7=Gold",
        ])
        .expect_code(1);
    assert!(
        r.all_output().contains("numbered from 0"),
        "{}",
        r.all_output()
    );
    assert!(lab.vm_info("pol-y").is_none());

    // First class disks take no policy override: refused, not ignored.
    let r = lab
        .sk(&["restore", "ivd:nosuch", "--profile", VSAN])
        .expect_code(1);
    assert!(
        r.all_output().contains("not to a first class disk"),
        "{}",
        r.all_output()
    );

    // A VM without policies restores without any.
    lab.create_vm("nopol", &["1M"], &[]);
    lab.sk(&["backup", "vm:nopol"]).ok();
    let shown = lab.sk(&["--json", "show", "vm:nopol"]).ok().json();
    assert_eq!(shown["storage_policies"]["home"], serde_json::Value::Null);
    lab.sk(&["restore", "vm:nopol", "--name", "nopol-r"]).ok();
    assert_eq!(policies(&lab, "nopol-r"), serde_json::Value::Null);
}

/// The local file behind `[datastore1] folder/file`.
fn datastore_file(lab: &Lab, folder: &str, file: &str) -> PathBuf {
    let info = json_file(&lab.dir().join("lab-server.json"));
    let root = info["inventory"]["datastores"]["datastore1"]
        .as_str()
        .expect("datastore1 path")
        .to_string();
    Path::new(&root).join(folder).join(file)
}

#[test]
fn nvram_is_restored_in_create_mode() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.lab(&[
        "create-vm",
        "--name",
        "efi",
        "--disk",
        "1M",
        "--firmware",
        "efi",
    ])
    .ok();
    let original = std::fs::read(datastore_file(&lab, "efi", "efi.nvram")).unwrap();
    assert!(!original.is_empty());
    lab.sk(&["backup", "vm:efi"]).ok();
    lab.sk(&["restore", "vm:efi", "--name", "efi-r", "--power-on"])
        .ok();
    let restored = std::fs::read(datastore_file(&lab, "efi-r", "efi-r.nvram")).unwrap();
    // The lab gives a new VM an NVRAM of its own (seeded by its moref): only the upload makes
    // them equal.
    assert!(
        restored == original,
        "the restored VM's .nvram ({} bytes) is not the saved one ({} bytes)",
        restored.len(),
        original.len()
    );
    // A vApp's children are created by CreateChildVM_Task in folders the server picks: the
    // .nvram goes beside the .vmx it chose.
    lab.lab(&["create-vapp", "--name", "app", "--vm", "child:1M"])
        .ok();
    lab.sk(&["backup", "vapp:app"]).ok();
    lab.sk(&["restore", "vapp:app", "--name", "app2"]).ok();
    let nvram_of = |vm: &str| {
        let vmx = lab.vm_info(vm).unwrap()["vmx_path"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, rel) = vmx.split_once("] ").unwrap();
        let (folder, file) = rel.rsplit_once('/').unwrap();
        let stem = file.strip_suffix(".vmx").unwrap();
        std::fs::read(datastore_file(&lab, folder, &format!("{stem}.nvram"))).unwrap()
    };
    assert!(nvram_of("app2-child") == nvram_of("child"));
}

#[test]
fn quiesce_spec_carries_vss_options_and_timeout() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.lab(&[
        "create-vm",
        "--name",
        "win",
        "--disk",
        "1M",
        "--guest-id",
        "windows9Server64Guest",
    ])
    .ok();
    lab.create_vm("lin", &["1M"], &[]);
    lab.create_vm("plain", &["1M"], &[]);
    let config = lab.config_variant(
        "vss.toml",
        "lock_wait_seconds = 60",
        "lock_wait_seconds = 60\nquiesce_timeout_seconds = 600",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}\n[vss]\nbackup_type = \"copy\"\nbootable_system_state = true\nbackup_context = \"backup\"\n\
             [targets.\"vm:win\".vss]\npartial_file_support = false\n\
             [targets.\"vm:lin\"]\nquiesce_timeout_seconds = 30\n"
        ),
    )
    .unwrap();
    let r = lab
        .sk_with(&["--json", "backup", "vm:win", "vm:lin"], &config, &[])
        .ok();
    for t in r.json()["targets"].as_array().unwrap() {
        assert_eq!(t["quiesced"], true, "{t}");
    }
    let specs = json_file(&lab.dir().join("quiesce-specs.json"));
    let win = &specs["win"];
    assert_eq!(win["type"], "VirtualMachineWindowsQuiesceSpec", "{specs}");
    assert_eq!(win["timeout"], 10, "{specs}");
    assert_eq!(win["vss_backup_type"], 5, "{specs}");
    assert_eq!(win["vss_bootable_system_state"], true, "{specs}");
    assert_eq!(win["vss_partial_file_support"], false, "{specs}");
    assert_eq!(win["vss_backup_context"], "ctx_backup", "{specs}");
    // Linux: the target's own timeout (30 s is below vSphere's 5 minutes), no VSS.
    let lin = &specs["lin"];
    assert_eq!(lin["type"], "VirtualMachineGuestQuiesceSpec", "{specs}");
    assert_eq!(lin["timeout"], 5, "{specs}");
    assert!(lin.get("vss_backup_type").is_none(), "{specs}");
    // Without a timeout a Linux guest gets the plain CreateSnapshot_Task.
    lab.sk(&["backup", "vm:plain"]).ok();
    let specs = json_file(&lab.dir().join("quiesce-specs.json"));
    assert!(specs.get("plain").is_none(), "{specs}");
    // A guest that cannot quiesce fails the Ex call too: quiesce = require fails cleanly.
    lab.lab(&["knobs", "--fail-quiesced-snapshots", "true"])
        .ok();
    let r = lab
        .sk_with(
            &["--json", "backup", "vm:win", "--quiesce", "require"],
            &config,
            &[],
        )
        .expect_code(1);
    assert!(
        r.json()["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("quiesce = require"),
        "{}",
        r.stdout
    );
    assert!(lab.snapshots("win").is_empty());
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

#[test]
fn compression_level_per_target() {
    let lab = Lab::up();
    // Log-like text: compressible, and better at a high level than at a fast one.
    let mut text = String::new();
    let mut i: u64 = 0;
    while text.len() < 4 << 20 {
        text.push_str(&format!(
            "{i:09} GET /shop/item?id={} user={} status={} bytes={}\n",
            i.wrapping_mul(7919) % 100_003,
            i.wrapping_mul(31) % 997,
            [200, 304, 404][(i % 3) as usize],
            i.wrapping_mul(131) % 65_536
        ));
        i += 1;
    }
    let image = lab.dir().join("log.img");
    std::fs::write(&image, &text.as_bytes()[..4 << 20]).unwrap();
    let img = image.to_string_lossy().into_owned();
    for vm in ["fast", "small"] {
        lab.create_vm(vm, &["4M"], &[]);
        lab.lab(&[
            "guest-write",
            "--vm",
            vm,
            "--disk",
            "0",
            "--offset",
            "0",
            "--from-file",
            &img,
        ])
        .ok();
    }
    assert_eq!(lab.digest("fast", 0), lab.digest("small", 0));
    // Two repositories, so that the second backup does not deduplicate against the first.
    let sections = "[targets.\"vm:fast\"]\ncompression_level = -5\n[targets.\"vm:small\"]\ncompression_level = 19";
    let repo = lab.dir().join("repo").to_string_lossy().into_owned();
    let first = with_section(&lab, "levels.toml", sections);
    let text = std::fs::read_to_string(&first).unwrap();
    let second = lab.dir().join("levels2.toml");
    std::fs::write(
        &second,
        text.replace(&format!("{repo}\""), &format!("{repo}2\"")),
    )
    .unwrap();
    lab.sk_with(&["repo", "init"], &first, &[]).ok();
    lab.sk_with(&["repo", "init"], &second, &[]).ok();
    lab.sk_with(&["backup", "vm:fast"], &first, &[]).ok();
    lab.sk_with(&["backup", "vm:small"], &second, &[]).ok();
    let fast = dir_bytes(&lab.dir().join("repo").join("chunks"));
    let small = dir_bytes(&lab.dir().join("repo2").join("chunks"));
    eprintln!("4 MiB of log-like text: level -5 stored {fast} bytes, level 19 {small} bytes");
    assert!(
        small * 10 < fast * 9,
        "level 19 stored {small} bytes, level -5 {fast}: expected at least 10% less"
    );
    // Recorded in the generation, and each restores byte for byte.
    let shown = lab
        .sk_with(&["--json", "show", "vm:small"], &second, &[])
        .ok();
    assert_eq!(shown.json()["compression_level"], 19, "{}", shown.stdout);
    let shown = lab
        .sk_with(&["--json", "show", "vm:fast"], &first, &[])
        .ok();
    assert_eq!(shown.json()["compression_level"], -5, "{}", shown.stdout);
    assert_eq!(
        lab.restored_digests(&second, "small", 1, 1),
        vec![lab.digest("small", 0)]
    );
    // Out of zstd's range: refused when the file is read.
    let bad = with_section(
        &lab,
        "bad.toml",
        "[targets.\"vm:fast\"]\ncompression_level = 40",
    );
    let r = lab.sk_with(&["backup", "vm:fast"], &bad, &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("-7..=22"), "{}", r.stderr);
}

#[test]
fn encryption_and_vtpm_are_detected_and_explained() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("sec", &["1M"], &[]);
    lab.guest_write("sec", 0, "0", "1M", Some(9));
    lab.lab(&["secure-vm", "--vm", "sec", "--encrypted", "--vtpm"])
        .ok();
    let r = lab.sk(&["backup", "vm:sec"]).ok();
    assert!(
        r.stderr
            .contains("the VM is encrypted (key provider lab-kms)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("virtual TPM"), "{}", r.stderr);
    let shown = lab.sk(&["--json", "show", "vm:sec"]).ok().json();
    assert_eq!(shown["security"]["encrypted"], true, "{shown}");
    assert_eq!(shown["security"]["vtpm"], true, "{shown}");
    assert_eq!(shown["security"]["key_provider"], "lab-kms", "{shown}");
    let text = lab.sk(&["show", "vm:sec"]).ok().stdout;
    assert!(text.contains("security: the VM is encrypted"), "{text}");
    // The restore says what is not brought back, and the data is.
    let r = lab.sk(&["restore", "vm:sec", "--name", "sec-r"]).ok();
    assert!(
        r.stderr.contains("a restore creates an unencrypted VM"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("virtual TPM"), "{}", r.stderr);
    assert_eq!(lab.digest("sec-r", 0), lab.digest("sec", 0));
    // Import mode would register the saved .vmx, which needs the key: refused up front.
    let r = lab
        .sk(&["restore", "vm:sec", "--name", "sec-i", "--mode", "import"])
        .expect_code(1);
    assert!(
        r.all_output().contains("--mode create"),
        "{}",
        r.all_output()
    );
    assert!(lab.vm_info("sec-i").is_none());
    // A plain VM gets no such note.
    lab.create_vm("plain", &["1M"], &[]);
    let r = lab.sk(&["backup", "vm:plain"]).ok();
    assert!(!r.stderr.contains("encrypted"), "{}", r.stderr);
    let shown = lab.sk(&["--json", "show", "vm:plain"]).ok().json();
    assert_eq!(shown["security"]["encrypted"], false, "{shown}");
}
