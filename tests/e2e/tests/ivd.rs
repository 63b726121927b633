//! First class disks (`ivd:`) end to end against the lab: a full and a CBT incremental backup
//! (the incremental reads only the changed areas), no snapshot left behind, a restore compared
//! by digest, `--attach vm:NAME`, and a clear error for an unknown disk.

use safekeeping_e2e::Lab;
use vim_client::{Client, ClientOptions, MoRef, Provisioning, Secret, Tls};

const MIB: u64 = 1 << 20;

/// A logged-in VIM client for the lab (pinned certificate), and the lab's datastore1.
async fn client(lab: &Lab) -> (Client, MoRef) {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap();
    let s = |k: &str| json[k].as_str().unwrap().to_string();
    let options = ClientOptions::new(s("url"), Tls::PinnedSha256(s("thumbprint_sha256")));
    let c = Client::connect(&options).await.unwrap();
    let password = std::fs::read_to_string(s("password_file")).unwrap();
    c.login(&s("user"), &Secret::new(password)).await.unwrap();
    let ds = json["datastore_morefs"]["datastore1"].as_str().unwrap();
    (c, MoRef::new("Datastore", ds))
}

fn write(lab: &Lab, path: &str, offset: u64, len: u64, seed: u64) {
    lab.lab(&[
        "guest-write",
        "--path",
        path,
        "--offset",
        &offset.to_string(),
        "--len",
        &len.to_string(),
        "--seed",
        &seed.to_string(),
    ])
    .ok();
}

fn digest(lab: &Lab, path: &str) -> String {
    lab.lab(&["disk-digest", "--path", path])
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_class_disk_full_incremental_restore_attach() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    let (c, ds) = client(&lab).await;
    let disk = c
        .fcd_create("data1", &ds, 16, None, Provisioning::Thin)
        .await
        .unwrap();
    let path = disk.file_path.clone().unwrap();
    write(&lab, &path, 0, 2 * MIB, 1);
    write(&lab, &path, 9 * MIB, MIB, 2);

    // Full, through the VIM first class disk manager, chosen in the configuration.
    let config = lab.config();
    let vim_config = lab.config_variant("fcd-vim.toml", "[vddk]", "fcd_api = \"vim\"\n\n[vddk]");
    let run = lab
        .sk_with(&["--json", "backup", "ivd:data1"], &vim_config, &[])
        .ok();
    assert!(
        run.stderr.contains("first class disk endpoint") && run.stderr.contains("api=\"vim\""),
        "{}",
        run.stderr
    );
    let r = run.json();
    let t = &r["targets"][0];
    assert_eq!(t["status"], "succeeded", "{r}");
    assert_eq!(t["mode"], "full", "{r}");
    assert_eq!(t["generation"], 1, "{r}");
    let full_read = t["bytes_read"].as_u64().unwrap();
    assert!(full_read >= 3 * MIB, "{r}");
    assert!(
        c.fcd_snapshots(&disk.id, &ds).await.unwrap().is_empty(),
        "the backup left a snapshot"
    );
    let digest1 = digest(&lab, &path);
    // Its dry run plans an incremental from generation 1, and takes no snapshot.
    let plan = lab
        .sk(&["--json", "backup", "ivd:data1", "--dry-run"])
        .ok()
        .json();
    let p = &plan["targets"][0];
    assert_eq!(p["target"], "ivd:data1", "{plan}");
    assert_eq!(p["previous_generation"], 1, "{plan}");
    assert_eq!(p["disks"][0]["mode"], "incremental", "{plan}");
    assert!(c.fcd_snapshots(&disk.id, &ds).await.unwrap().is_empty());

    // Incremental through the VSLM endpoint (the change id is the same disk's), addressed by
    // id this time.
    write(&lab, &path, 5 * MIB, MIB, 3);
    let target = format!("ivd:{}", disk.id);
    let r = lab.sk_with(
        &["--json", "backup", &target],
        &config,
        &[("SAFEKEEPING_FCD_API", "nonsense")],
    );
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(
        r.all_output().contains("expected vim, vslm or auto"),
        "{}",
        r.all_output()
    );
    let r = lab
        .sk_with(
            &["--json", "backup", &target],
            &config,
            &[("SAFEKEEPING_FCD_API", "vslm")],
        )
        .ok()
        .json();
    let t = &r["targets"][0];
    assert_eq!(t["status"], "succeeded", "{r}");
    assert_eq!(t["mode"], "incremental", "{r}");
    assert_eq!(t["generation"], 2, "{r}");
    let incr_read = t["bytes_read"].as_u64().unwrap();
    assert!(
        incr_read >= MIB && incr_read < full_read,
        "incremental read {incr_read} bytes, full {full_read}: {r}"
    );
    assert!(c.fcd_snapshots(&disk.id, &ds).await.unwrap().is_empty());
    let digest2 = digest(&lab, &path);
    assert_ne!(digest1, digest2);

    // The repository lists the disk with both generations.
    let list = lab.sk(&["list"]).ok();
    assert!(list.stdout.contains("data1"), "{}", list.all_output());

    // Restore the incremental generation as a new disk, attached to a VM.
    lab.create_vm("user1", &["8M"], &[]);
    let r = lab
        .sk(&[
            "--json",
            "restore",
            "ivd:data1",
            "--name",
            "data1-back",
            "--attach",
            "vm:user1",
        ])
        .ok()
        .json();
    assert_eq!(r["generation"], 2, "{r}");
    assert_eq!(r["name"], "data1-back", "{r}");
    assert_eq!(r["capacity"], 16 * MIB, "{r}");
    assert_eq!(r["attached_to"], "user1", "{r}");
    let new_path = r["path"].as_str().unwrap();
    assert_ne!(new_path, path);
    assert_eq!(digest(&lab, new_path), digest2);
    let new_id = r["id"].as_str().unwrap();
    let users = c.vms_with_fcd(new_id, &ds).await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].vm_name, "user1");

    // `list` and `show` know the disk's generations.
    let list = lab.sk(&["list", "ivd:data1"]).ok();
    assert!(list.stdout.contains('2'), "{}", list.all_output());
    let show = lab.sk(&["show", "ivd:data1"]).ok();
    assert!(
        show.stdout.contains("ivd.json") && show.stdout.contains("data1"),
        "{}",
        show.all_output()
    );

    // A first class disk attached to a VM is read by the VM's backup too, and stored once at
    // the chunk level: every chunk of data1-back (generation 2's content) is already there.
    let r = lab.sk(&["--json", "backup", "vm:user1"]).ok().json();
    let disks = r["targets"][0]["disks"].as_array().unwrap().clone();
    assert_eq!(disks.len(), 2, "{r}");
    let attached = disks
        .iter()
        .find(|d| d["capacity"] == 16 * MIB)
        .unwrap_or_else(|| panic!("no 16 MiB disk: {r}"));
    assert!(attached["bytes_read"].as_u64().unwrap() >= 3 * MIB, "{r}");
    assert_eq!(attached["bytes_new"], 0, "attached disk stored twice: {r}");

    // The first generation, by id, as another disk.
    let r = lab
        .sk(&[
            "--json",
            "restore",
            &target,
            "--generation",
            "1",
            "--name",
            "data1-g1",
        ])
        .ok()
        .json();
    assert_eq!(digest(&lab, r["path"].as_str().unwrap()), digest1);

    // An unknown disk is a clear failure for that target (exit 3 for a partial run).
    let r = lab.sk(&["--json", "backup", "ivd:nope", "ivd:data1"]);
    assert_eq!(r.code, 3, "{}", r.all_output());
    let j = r.json();
    let failed = &j["targets"][0];
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no first class disk matches ivd:nope"),
        "{j}"
    );
    assert_eq!(j["targets"][1]["status"], "succeeded", "{j}");
}
