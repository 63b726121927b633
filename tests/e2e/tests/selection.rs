//! Target selection end to end: `tag:` expanding to VMs and a first class disk, `--exclude`,
//! the VM safekeeping runs in left out (its BIOS uuid file named by `[defaults]
//! product_uuid_file`, then by `SAFEKEEPING_PRODUCT_UUID_FILE`), one target failing (an
//! injected read error only its disk reaches) without stopping the others (exit 3, the others committed), `--parallel 3` with the
//! fake VDDK's statistics showing overlapping connections, and `--all vm`.

use safekeeping_e2e::Lab;
use vim_client::{Client, ClientOptions, MoRef, Provisioning, Secret, Tls};

const MIB: u64 = 1 << 20;

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

fn tag(lab: &Lab, object: &str) {
    lab.lab(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        object,
    ])
    .ok();
}

/// The most VDDK connections open at once, from the connect/disconnect events in order.
fn max_overlap(stats: &[serde_json::Value]) -> i64 {
    let (mut open, mut max) = (0i64, 0i64);
    for e in stats {
        match e["event"].as_str() {
            Some("connect") => open += 1,
            Some("disconnect") => open -= 1,
            _ => {}
        }
        max = max.max(open);
    }
    max
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_selection_exclusion_failure_and_parallel_runs() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    // Sectors 65536.. (32 MiB) exist only on `big`: only its read fails. Reads are slowed so
    // that targets running in parallel visibly overlap. Appended before any first class disk
    // exists (the lab rewrites this file when FCDs and their snapshots come and go).
    lab.vddk_conf_append("fake.fail_read_sectors = 65536-65600\nfake.read_latency_ms = 150");
    for vm in ["a1", "a2", "me"] {
        lab.create_vm(vm, &["8M"], &[]);
        lab.guest_write(vm, 0, "0", "1M", Some(7));
    }
    lab.create_vm("big", &["64M"], &[]);
    lab.guest_write("big", 0, "32M", "1M", Some(8));
    let (c, ds) = client(&lab).await;
    let disk = c
        .fcd_create("d1", &ds, 16, None, Provisioning::Thin)
        .await
        .unwrap();
    lab.lab(&[
        "guest-write",
        "--path",
        disk.file_path.as_deref().unwrap(),
        "--offset",
        "0",
        "--len",
        &MIB.to_string(),
        "--seed",
        "9",
    ])
    .ok();
    for object in [
        "vm:a1",
        "vm:a2",
        "vm:big",
        "vm:me",
        &format!("ivd:{}", disk.id),
    ] {
        tag(&lab, object);
    }
    // safekeeping "runs in" VM `me`.
    let me = lab.vm_info("me").unwrap();
    let uuid_file = lab.dir().join("product_uuid");
    std::fs::write(
        &uuid_file,
        format!("{}\n", me["uuid"].as_str().unwrap().to_uppercase()),
    )
    .unwrap();
    let uuid_env = uuid_file.to_str().unwrap();

    // The first run names the file in the configuration, the second in the environment.
    let uuid_config = lab.config_variant(
        "uuid.toml",
        "max_vddk_connections = 8",
        &format!("max_vddk_connections = 8\nproduct_uuid_file = \"{uuid_env}\""),
    );
    let started = std::time::Instant::now();
    let r = lab.sk_with(
        &[
            "--json",
            "backup",
            "tag:backup/gold",
            "--exclude",
            "vm:a2",
            "--parallel",
            "3",
        ],
        &uuid_config,
        &[],
    );
    let wall = started.elapsed();
    assert_eq!(r.code, 3, "{}", r.all_output());
    let j = r.json();
    let targets = j["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{j}");
    let by_name = |n: &str| {
        targets
            .iter()
            .find(|t| t["vm"] == n)
            .unwrap_or_else(|| panic!("no result for {n}: {j}"))
    };
    assert_eq!(by_name("a1")["status"], "succeeded", "{j}");
    assert_eq!(by_name("d1")["status"], "succeeded", "{j}");
    let big = by_name("big");
    assert_eq!(big["status"], "failed", "{j}");
    assert!(big["error"].as_str().unwrap().contains("VDDK"), "{j}");
    let skipped = j["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{j}");
    assert!(skipped.iter().any(|s| s["reason"] == "excluded"), "{j}");
    assert!(
        skipped
            .iter()
            .any(|s| s["reason"].as_str().unwrap().contains("runs in")),
        "{j}"
    );
    // The others were committed: the repository lists them, not the failed or skipped ones.
    let list = lab.sk(&["list"]).ok().stdout;
    for name in ["a1", "d1"] {
        assert!(list.contains(name), "{list}");
    }
    for name in ["a2", "me"] {
        assert!(!list.contains(&format!(" {name} ")), "{list}");
    }
    // No snapshot left anywhere, the failed VM included.
    assert!(lab.snapshots("big").is_empty());
    assert!(c.fcd_snapshots(&disk.id, &ds).await.unwrap().is_empty());
    // --parallel 3: the three targets' VDDK connections overlapped.
    let stats = lab.vddk_stats();
    let overlap = max_overlap(&stats);
    eprintln!("parallel 3: wall {wall:?}, at most {overlap} VDDK connections open at once");
    assert!(overlap >= 2, "connections never overlapped: {stats:?}");

    // --all vm minus everything tagged: none of the tagged VMs (the lab's own VMs remain).
    lab.vddk_conf_remove("fake.fail_read_sectors");
    let r = lab
        .sk_with(
            &["--json", "backup", "--all", "vm", "--exclude", "tag:gold"],
            &lab.config(),
            &[("SAFEKEEPING_PRODUCT_UUID_FILE", uuid_env)],
        )
        .ok();
    let j = r.json();
    let names: Vec<&str> = j["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["vm"].as_str().unwrap_or_default())
        .collect();
    assert!(
        names.iter().all(|n| !["a1", "a2", "big", "me"].contains(n)),
        "{j}"
    );

    // A typo in --exclude is an error, not a silent backup of everything.
    let r = lab.sk(&["backup", "vm:a1", "--exclude", "vm:nosuchvm"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(r.stderr.contains("nosuchvm"), "{}", r.all_output());
}
