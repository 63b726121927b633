//! Quiesce and transport control end to end, with the lab's `fail_quiesced_snapshots` knob:
//! `--quiesce try` (the default) falls back once to a snapshot without quiescing and says so
//! in the log and `--json`; `--quiesce require` fails the target cleanly (no snapshot left,
//! nothing committed), from the command line and from `[targets."vm:NAME"] quiesce`, which
//! the command line overrides, and from a `[targets."tag:CAT/TAG"]` section for the VMs carrying
//! the tag (below the VM's own section); `--no-quiesce` stays an alias of `--quiesce off`.
//! `--transport nbd` overrides `[vddk] transports` (`nbdssl:nbd` in the lab) on backup and
//! restore: the fake VDDK opens the disks with nbd, and the mode is recorded per disk in
//! `--json` and in the generation's manifest; `[targets."vm:NAME"] transports` does the same
//! for one VM, below the command line; unknown modes are refused.

use safekeeping_e2e::Lab;

fn with_section(lab: &Lab, file: &str, section: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let p = lab.dir().join(file);
    std::fs::write(&p, format!("{text}\n{section}\n")).unwrap();
    p
}

#[test]
fn quiesce_modes_and_transport_override() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("q", &["2M"], &[]);
    lab.guest_write("q", 0, "0", "1M", Some(5));
    lab.lab(&["knobs", "--fail-quiesced-snapshots", "true"])
        .ok();

    // try (default): one fall-back without quiescing, said in --json and the log.
    let r = lab.sk(&["--json", "backup", "vm:q"]).ok();
    let t = &r.json()["targets"][0];
    assert_eq!(t["quiesce"], "try", "{t}");
    assert_eq!(t["quiesced"], false, "{t}");
    assert!(
        t["quiesce_fallback"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{t}"
    );
    assert!(
        r.stderr.contains("retrying once without quiescing"),
        "{}",
        r.stderr
    );
    let generations = |lab: &Lab| {
        lab.sk(&["--json", "list", "vm:q"]).ok().json()["targets"][0]["generations"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    assert_eq!(generations(&lab), 1);

    // require: the target fails, no snapshot is left and nothing is committed.
    let r = lab
        .sk(&["--json", "backup", "vm:q", "--quiesce", "require"])
        .expect_code(1);
    let t = &r.json()["targets"][0];
    assert_eq!(t["status"], "failed", "{t}");
    assert!(
        t["error"].as_str().unwrap().contains("quiesce = require"),
        "{t}"
    );
    assert!(lab.snapshots("q").is_empty(), "{:?}", lab.snapshots("q"));
    assert_eq!(generations(&lab), 1);

    // The target's configuration section asks for require; the command line overrides it.
    let config = with_section(
        &lab,
        "require.toml",
        "[targets.\"vm:q\"]\nquiesce = \"require\"",
    );
    let r = lab
        .sk_with(&["backup", "vm:q"], &config, &[])
        .expect_code(1);
    assert!(
        r.all_output().contains("quiesce = require"),
        "{}",
        r.all_output()
    );
    assert!(lab.snapshots("q").is_empty());
    let r = lab
        .sk_with(
            &["--json", "backup", "vm:q", "--quiesce", "try"],
            &config,
            &[],
        )
        .ok();
    assert_eq!(r.json()["targets"][0]["quiesced"], false);
    // A tag's section applies to the VMs carrying the tag; the VM's own section wins over it.
    lab.lab(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        "vm:q",
    ])
    .ok();
    let by_tag = with_section(
        &lab,
        "tag.toml",
        "[targets.\"tag:backup/gold\"]\nquiesce = \"require\"",
    );
    let r = lab
        .sk_with(&["backup", "vm:q"], &by_tag, &[])
        .expect_code(1);
    assert!(
        r.all_output().contains("quiesce = require"),
        "{}",
        r.all_output()
    );
    let both = with_section(
        &lab,
        "both.toml",
        "[targets.\"tag:backup/gold\"]\nquiesce = \"require\"\n[targets.\"vm:q\"]\nquiesce = \"off\"",
    );
    let r = lab.sk_with(&["--json", "backup", "vm:q"], &both, &[]).ok();
    assert_eq!(r.json()["targets"][0]["quiesce"], "off");
    // A section with a bad value is refused when the file is read.
    let bad = with_section(&lab, "bad.toml", "[targets.\"vm:q\"]\nquiesce = \"maybe\"");
    let r = lab.sk_with(&["backup", "vm:q"], &bad, &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("maybe"), "{}", r.stderr);

    // off and its old spelling: no quiescing asked, so no fall-back either.
    for off in [&["--quiesce", "off"][..], &["--no-quiesce"][..]] {
        let mut args = vec!["--json", "backup", "vm:q"];
        args.extend_from_slice(off);
        let r = lab.sk(&args).ok();
        let t = &r.json()["targets"][0];
        assert_eq!(t["quiesce"], "off", "{t}");
        assert!(t.get("quiesce_fallback").is_none(), "{t}");
    }
    lab.sk(&["backup", "vm:q", "--no-quiesce", "--quiesce", "try"])
        .expect_code(2);

    // --transport overrides [vddk] transports (nbdssl:nbd): the disk is read with nbd.
    let before = lab.vddk_stats().len();
    let r = lab
        .sk(&["--json", "backup", "vm:q", "--transport", "nbd"])
        .ok();
    let disk = &r.json()["targets"][0]["disks"][0];
    assert_eq!(disk["transport"], "nbd", "{disk}");
    let opened: Vec<_> = lab
        .vddk_stats()
        .into_iter()
        .skip(before)
        .filter(|e| e["event"] == "open")
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["transport"], "nbd");
    let shown = lab.sk(&["--json", "show", "vm:q"]).ok().json();
    assert_eq!(shown["disks"][0]["transport"], "nbd", "{shown}");
    // Without it, the configuration's first mode.
    let r = lab.sk(&["--json", "backup", "vm:q"]).ok();
    assert_eq!(r.json()["targets"][0]["disks"][0]["transport"], "nbdssl");
    // A target's section picks its transports; the command line still wins.
    let nbd = with_section(&lab, "nbd.toml", "[targets.\"vm:q\"]\ntransports = \"nbd\"");
    let r = lab.sk_with(&["--json", "backup", "vm:q"], &nbd, &[]).ok();
    assert_eq!(r.json()["targets"][0]["disks"][0]["transport"], "nbd");
    let r = lab
        .sk_with(
            &["--json", "backup", "vm:q", "--transport", "nbdssl"],
            &nbd,
            &[],
        )
        .ok();
    assert_eq!(r.json()["targets"][0]["disks"][0]["transport"], "nbdssl");
    let bad = with_section(
        &lab,
        "badt.toml",
        "[targets.\"vm:q\"]\ntransports = \"nbd:fax\"",
    );
    let r = lab.sk_with(&["backup", "vm:q"], &bad, &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("`fax`"), "{}", r.stderr);
    // Unknown modes are usage errors.
    let r = lab
        .sk(&["backup", "vm:q", "--transport", "carrier-pigeon"])
        .expect_code(2);
    assert!(r.stderr.contains("carrier-pigeon"), "{}", r.stderr);

    // Restore with --transport: written with nbd, and byte-correct.
    let before = lab.vddk_stats().len();
    let r = lab
        .sk(&[
            "--json",
            "restore",
            "vm:q",
            "--name",
            "q2",
            "--transport",
            "nbd",
        ])
        .ok();
    assert_eq!(r.json()["disks"][0]["transport"], "nbd", "{}", r.stdout);
    assert!(lab
        .vddk_stats()
        .into_iter()
        .skip(before)
        .filter(|e| e["event"] == "open")
        .all(|e| e["transport"] == "nbd"));
    assert_eq!(lab.digest("q2", 0), lab.digest("q", 0));
}
