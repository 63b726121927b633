//! What an admin scripting safekeeping relies on: `-q` prints nothing after a success (cron
//! mails any output) and everything after a failure; `prune` without a rule is a usage error
//! (exit 2); `export --output -` streams the raw disk on stdout (holes as zeros) and creates no
//! file named `-`; `gc --dry-run` counts and removes nothing.

use safekeeping_e2e::{sha256_file, Lab};

fn chunk_files(dir: &std::path::Path) -> usize {
    fn walk(d: &std::path::Path, n: &mut usize) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&dir.join("chunks"), &mut n);
    n
}

#[test]
fn quiet_runs_stream_exports_and_usage_errors_behave_as_scripts_expect() {
    let lab = Lab::up();
    lab.create_vm("web01", &["64M"], &[]);
    lab.guest_write("web01", 0, "1M", "3M", Some(7));
    lab.guest_write("web01", 0, "40M", "2M", Some(8));
    lab.sk(&["repo", "init"]).ok();

    // -q after a success: not a byte on stdout or stderr.
    let r = lab.sk(&["-q", "backup", "vm:web01"]).ok();
    assert_eq!(r.stdout, "", "stdout of a quiet successful backup");
    assert_eq!(r.stderr, "", "stderr of a quiet successful backup");
    // ... while --json still prints its document.
    lab.guest_write("web01", 0, "10M", "1M", Some(9));
    let j = lab.sk(&["-q", "--json", "backup", "vm:web01"]).ok().json();
    assert_eq!(j["exit_code"], 0);
    // The run in figures: times, duration, bytes read/new/stored and the reduction.
    for key in ["started", "finished"] {
        assert!(
            j[key].as_str().is_some_and(|t| t.ends_with('Z')),
            "{key}: {j:#}"
        );
        assert!(
            j["targets"][0][key].as_str().is_some(),
            "targets[0].{key}: {j:#}"
        );
    }
    assert!(j["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(j["targets_succeeded"], 1);
    let (read, new, stored) = (
        j["bytes_read"].as_u64().unwrap(),
        j["bytes_new"].as_u64().unwrap(),
        j["bytes_stored"].as_u64().unwrap(),
    );
    // 1 MiB of incompressible guest data changed: read at least that, and stored it with no
    // more than the chunk's framing on top.
    assert!(read >= 1 << 20 && new > 0, "{j:#}");
    assert!(stored >= new && stored <= new + 4096, "{j:#}");
    assert_eq!(j["targets"][0]["bytes_stored"].as_u64(), Some(stored));
    let ratio = j["reduction_ratio"].as_f64().unwrap();
    assert!((ratio - read as f64 / stored as f64).abs() < 1e-9, "{j:#}");
    // -q after a failure: the failure is reported.
    let r = lab.sk(&["-q", "backup", "vm:no-such-vm"]).expect_code(1);
    assert!(r.all_output().contains("no-such-vm"), "{}", r.all_output());

    // prune without a rule: a usage error naming the rules.
    let r = lab.sk(&["prune"]).expect_code(2);
    assert!(r.stderr.contains("--keep-last"), "{}", r.stderr);

    // export to stdout: the whole disk, byte for byte, holes as zeros, nothing else on stdout.
    let r = std::process::Command::new(safekeeping_e2e::binary("safekeeping"))
        .arg("--config")
        .arg(lab.config())
        .args(["export", "vm:web01", "--disk", "0", "--output", "-"])
        .current_dir(lab.dir())
        .env_remove("SAFEKEEPING_CONFIG")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(r.stdout.len(), 64 << 20);
    let streamed = lab.dir().join("streamed.raw");
    std::fs::write(&streamed, &r.stdout).unwrap();
    assert_eq!(sha256_file(&streamed), lab.digest("web01", 0));
    assert!(
        !lab.dir().join("-").exists(),
        "a file named `-` was written"
    );

    // gc --dry-run after a prune: a dry run by its report, and no chunk file goes.
    let j = lab.sk(&["--json", "prune", "--keep-last", "1"]).ok().json();
    // Objects named like everywhere else (vm:NAME, folder key beside it), not positional arrays.
    assert_eq!(j["targets"][0]["target"], "vm:web01", "{j:#}");
    assert!(j["targets"][0]["key"].is_string(), "{j:#}");
    assert_eq!(j["targets"][0]["generations"][0]["keep"], true, "{j:#}");
    assert_eq!(j["removed"][0]["target"], "vm:web01", "{j:#}");
    assert_eq!(j["removed"][0]["generation"], 1, "{j:#}");
    let repo = lab.dir().join("repo");
    let before = chunk_files(&repo);
    let j = lab.sk(&["--json", "gc", "--dry-run"]).ok().json();
    assert_eq!(j["dry_run"], true, "{j:#}");
    assert_eq!(chunk_files(&repo), before);
}

/// The value of `name{target="…"}` (or the unlabelled `name`) in a parsed metrics file.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, target: Option<&str>) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("target") == target)
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name} is not a gauge: {other:?}"),
        })
}

fn scrape(path: &std::path::Path) -> prometheus_parse::Scrape {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("metrics file parses as Prometheus text")
}

#[test]
fn metrics_file_tells_a_monitoring_system_what_the_run_did_and_when_each_target_last_succeeded() {
    let lab = Lab::up();
    lab.create_vm("web01", &["16M"], &[]);
    lab.guest_write("web01", 0, "0", "2M", Some(3));
    lab.sk(&["repo", "init"]).ok();
    let metrics = lab.dir().join("safekeeping.prom");
    let m = metrics.to_str().unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;

    lab.sk(&["-q", "backup", "vm:web01", "--metrics-file", m])
        .ok();
    let s = scrape(&metrics);
    assert_eq!(
        sample(&s, "safekeeping_backup_run_exit_code", None),
        Some(0.0)
    );
    assert_eq!(
        sample(&s, "safekeeping_backup_target_success", Some("vm:web01")),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "safekeeping_backup_target_generation", Some("vm:web01")),
        Some(1.0)
    );
    assert!(
        sample(&s, "safekeeping_backup_target_read_bytes", Some("vm:web01")).unwrap() >= 2097152.0
    );
    let last = sample(
        &s,
        "safekeeping_target_last_success_timestamp_seconds",
        Some("vm:web01"),
    )
    .unwrap();
    assert!(
        last >= before - 5.0,
        "last success {last} before the run started {before}"
    );

    // A run that fails: its own outcome is recorded, and web01's last success still shows.
    lab.sk(&["backup", "vm:no-such-vm", "--metrics-file", m])
        .expect_code(1);
    let s = scrape(&metrics);
    assert_eq!(
        sample(&s, "safekeeping_backup_run_exit_code", None),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "safekeeping_backup_target_success", Some("vm:web01")),
        None
    );
    assert_eq!(
        sample(
            &s,
            "safekeeping_target_last_success_timestamp_seconds",
            Some("vm:web01")
        ),
        Some(last)
    );
    assert_eq!(
        sample(&s, "safekeeping_repository_targets", None),
        Some(1.0)
    );
    // Replaced atomically: no temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(lab.dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn small_messages_say_what_is_meant() {
    let lab = Lab::up();
    lab.create_vm("one", &["8M"], &[]);
    lab.sk(&["repo", "init"]).ok();
    // A second init: the repository is there, not "a folder that is not empty".
    let r = lab.sk(&["repo", "init"]).expect_code(1);
    assert!(
        r.stderr.contains("a repository already exists at"),
        "{}",
        r.stderr
    );
    lab.sk(&["backup", "vm:one"]).ok();
    // One of each: no "1 targets".
    let r = lab.sk(&["check"]).ok();
    assert!(
        r.stdout.starts_with("1 target, 1 generation, 1 index, "),
        "{}",
        r.stdout
    );
    // A missing passphrase file is called what it is, not a password file.
    let cfg = lab.config_variant(
        "with-passphrase.toml",
        "[repository]\n",
        "[repository]\npassphrase_file = \"/nonexistent/passphrase\"\n",
    );
    let r = lab
        .sk_with(&["repo", "init", "--encrypt"], &cfg, &[])
        .expect_code(1);
    assert!(
        r.stderr
            .contains("cannot read the repository passphrase file /nonexistent/passphrase"),
        "{}",
        r.stderr
    );
}

#[test]
fn read_data_subsets_together_verify_every_chunk_once_and_find_damage_in_their_part() {
    let lab = Lab::up();
    lab.create_vm("sub", &["32M"], &[]);
    lab.guest_write("sub", 0, "0", "24M", Some(11));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:sub"]).ok();
    let all = lab.sk(&["--json", "check", "--read-data"]).ok().json();
    let total = all["chunks_verified"].as_u64().unwrap();
    assert!(total >= 24, "{all:#}");
    let mut sum = 0;
    for part in ["1/3", "2/3", "3/3"] {
        let j = lab
            .sk(&["--json", "check", "--read-data-subset", part])
            .ok()
            .json();
        assert_eq!(j["read_data_subset"], part, "{j:#}");
        let n = j["chunks_verified"].as_u64().unwrap();
        assert!(n < total, "part {part} read {n} of {total} chunks");
        sum += n;
    }
    assert_eq!(sum, total, "the three parts together read every chunk once");

    // Damage one chunk: exactly one part finds it, the others pass.
    let repo = lab.dir().join("repo").join("chunks");
    let mut files = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    walk(&repo, &mut files);
    files.sort();
    let victim = &files[files.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    let failing: Vec<&str> = ["1/3", "2/3", "3/3"]
        .into_iter()
        .filter(|part| lab.sk(&["check", "--read-data-subset", part]).code == 1)
        .collect();
    assert_eq!(failing.len(), 1, "parts that found the damage: {failing:?}");
    // Bad values are usage errors.
    lab.sk(&["check", "--read-data-subset", "4/3"])
        .expect_code(2);
}

#[test]
fn stats_show_logical_unique_and_stored_space_per_target_and_in_all() {
    let lab = Lab::up();
    lab.create_vm("sa", &["32M"], &[]);
    lab.create_vm("sb", &["16M"], &[]);
    lab.guest_write("sa", 0, "0", "8M", Some(21));
    lab.guest_write("sb", 0, "0", "4M", Some(22));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:sa", "vm:sb"]).ok();
    // A second, unchanged generation of sa: twice the logical bytes, no new data.
    lab.sk(&["backup", "vm:sa"]).ok();
    let mib = 1u64 << 20;
    let j = lab.sk(&["--json", "stats"]).ok().json();
    let target = |name: &str| {
        j["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == name)
            .unwrap_or_else(|| panic!("{name} in {j:#}"))
            .clone()
    };
    let sa = target("vm:sa");
    assert_eq!(sa["generations"], 2, "{j:#}");
    assert_eq!(sa["logical_bytes"].as_u64(), Some(64 * mib), "{j:#}");
    assert_eq!(sa["unique_bytes"].as_u64(), Some(8 * mib), "{j:#}");
    assert_eq!(sa["dedup_ratio"].as_f64(), Some(8.0), "{j:#}");
    let stored = sa["stored_bytes"].as_u64().unwrap();
    // Random guest data does not compress: stored is the data plus the chunks' framing.
    assert!(stored >= 8 * mib && stored < 8 * mib + 64 * 1024, "{j:#}");
    let sb = target("vm:sb");
    assert_eq!(sb["logical_bytes"].as_u64(), Some(16 * mib), "{j:#}");
    assert_eq!(sb["unique_bytes"].as_u64(), Some(4 * mib), "{j:#}");
    let total = &j["total"];
    assert_eq!(total["generations"], 3, "{j:#}");
    assert_eq!(total["logical_bytes"].as_u64(), Some(80 * mib), "{j:#}");
    assert_eq!(total["unique_bytes"].as_u64(), Some(12 * mib), "{j:#}");
    // Nothing unreferenced: every chunk object is some generation's.
    assert_eq!(j["chunk_objects"], total["unique_chunks"], "{j:#}");
    // One target alone, and the text form.
    let one = lab.sk(&["--json", "stats", "vm:sb"]).ok().json();
    assert_eq!(one["targets"].as_array().unwrap().len(), 1);
    let text = lab.sk(&["stats"]).ok().stdout;
    assert!(text.contains("vm:sa") && text.contains("8.0:1"), "{text}");
}

#[test]
fn diff_counts_the_bytes_that_changed_per_disk_between_two_generations() {
    let lab = Lab::up();
    lab.create_vm("df", &["16M", "16M"], &[]);
    lab.guest_write("df", 0, "0", "8M", Some(31));
    lab.guest_write("df", 1, "0", "8M", Some(32));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:df"]).ok();
    // 2 MiB rewritten on disk 0, 1 MiB of new data on disk 1 past what was written.
    lab.guest_write("df", 0, "4M", "2M", Some(33));
    lab.guest_write("df", 1, "12M", "1M", Some(34));
    lab.sk(&["backup", "vm:df"]).ok();
    lab.sk(&["backup", "vm:df"]).ok();
    let mib = 1u64 << 20;
    let j = lab.sk(&["--json", "diff", "vm:df", "1", "2"]).ok().json();
    let disks = j["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{j:#}");
    assert_eq!(disks[0]["change"], "changed");
    // Content-defined chunks (the default): the chunks holding the rewritten 2 MiB differ
    // whole, so a little more than the 2 MiB, at most one chunk (2 MiB) on either side.
    let d0 = disks[0]["changed_bytes"].as_u64().unwrap();
    assert!((2 * mib..=6 * mib).contains(&d0), "{j:#}");
    // New data in never-written space: its chunks end at the zeros, exactly 1 MiB.
    assert_eq!(disks[1]["changed_bytes"].as_u64(), Some(mib), "{j:#}");
    assert_eq!(j["changed_bytes"].as_u64(), Some(d0 + mib));
    // Nothing changed between the last two: every disk unchanged.
    let j = lab.sk(&["--json", "diff", "vm:df", "2", "3"]).ok().json();
    assert!(
        j["disks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["change"] == "unchanged"),
        "{j:#}"
    );
    // The text form says the same figures as the JSON, per disk, in MiB with one decimal.
    let text = lab.sk(&["diff", "vm:df", "1", "2"]).ok().stdout;
    let line = |disk: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("disk {disk} (device")))
            .unwrap_or_else(|| panic!("no line for disk {disk}: {text}"))
            .to_string()
    };
    let d0_text = format!("{:.1} MiB of 16.0 MiB differ", d0 as f64 / mib as f64);
    assert!(
        line("0").ends_with(&format!("changed, {d0_text}")),
        "{d0_text}: {text}"
    );
    assert!(
        line("1").ends_with("changed, 1.0 MiB of 16.0 MiB differ"),
        "{text}"
    );
    // An unknown generation is an error naming it.
    let r = lab.sk(&["diff", "vm:df", "1", "9"]).expect_code(1);
    assert!(r.stderr.contains("generation 9"), "{}", r.stderr);
}

#[test]
fn show_tells_the_hardware_placement_and_nics_in_text_and_json() {
    let lab = Lab::up();
    lab.lab(&[
        "create-vm",
        "--name",
        "hw",
        "--disk",
        "8M",
        "--nic",
        "VM Network",
        "--cpus",
        "4",
        "--memory-mb",
        "2048",
        "--firmware",
        "efi",
        "--guest-id",
        "ubuntu64Guest",
    ])
    .ok();
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:hw"]).ok();
    let j = lab.sk(&["--json", "show", "vm:hw"]).ok().json();
    assert_eq!(j["target_name"], "vm:hw", "{j:#}");
    let h = &j["hardware"];
    assert_eq!(h["cpus"], 4, "{j:#}");
    assert_eq!(h["memory_mb"], 2048, "{j:#}");
    assert_eq!(h["guest_id"], "ubuntu64Guest", "{j:#}");
    assert_eq!(h["firmware"], "efi", "{j:#}");
    assert!(
        j["placement"]["datacenter"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{j:#}"
    );
    assert_eq!(j["nics"][0]["network"], "VM Network", "{j:#}");
    let text = lab.sk(&["show", "vm:hw"]).ok().stdout;
    assert!(
        text.contains("hardware: 4 CPUs")
            && text.contains("2.0 GiB memory")
            && text.contains("guest ubuntu64Guest"),
        "{text}"
    );
}
