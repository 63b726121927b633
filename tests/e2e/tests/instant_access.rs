//! Instant access end to end: `serve` exports a backed-up disk over NBD to the real Debian
//! clients (nbdinfo, nbdcopy, qemu-img, qemu-io) — same bytes as the VM's disk, holes reported
//! as holes, writes only into `--overlay`, never into the repository — and `files ls|get`
//! read single files out of real ext4, FAT and NTFS images inside a backed-up disk.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use safekeeping_e2e::{sha256_file, stop_with, Lab};

const MIB: u64 = 1 << 20;

/// Runs a client tool, panicking with its output unless it succeeds; returns stdout.
fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `safekeeping serve ARGS --listen unix:SOCKET` and waits until the socket exists.
fn serve(lab: &Lab, socket: &Path, extra: &[&str]) -> Child {
    let listen = format!("unix:{}", socket.display());
    let mut args = vec!["serve"];
    args.extend_from_slice(extra);
    args.extend(["--listen", &listen]);
    let mut child = lab.sk_spawn(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve exited {status} before listening:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "serve did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// `serve` with another configuration file (S3, encrypted), waiting until it listens.
fn serve_with(config: &Path, socket: &Path, extra: &[&str]) -> Child {
    let listen = format!("unix:{}", socket.display());
    let mut child = Command::new(safekeeping_e2e::binary("safekeeping"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .args(extra)
        .args(["--listen", &listen])
        .env_remove("SAFEKEEPING_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve exited early:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn uri(socket: &Path) -> String {
    format!("nbd+unix:///?socket={}", socket.display())
}

/// Stops a serve with SIGINT and asserts a clean exit that removed the socket.
fn stop(child: Child, socket: &Path) {
    let (code, stderr) = stop_with("INT", child);
    assert_eq!(code, Some(0), "serve stops cleanly on Ctrl-C:\n{stderr}");
    assert!(!socket.exists(), "the socket is removed at stop");
}

/// `nbdinfo --map` as (offset, length, type) triples.
fn map(uri: &str) -> Vec<(u64, u64, u32)> {
    tool("nbdinfo", &["--map", uri])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// The type `nbdinfo --map` reports for byte `at`.
fn type_at(map: &[(u64, u64, u32)], at: u64) -> u32 {
    map.iter()
        .find(|(o, l, _)| *o <= at && at < o + l)
        .unwrap_or_else(|| panic!("{at} is in the map {map:?}"))
        .2
}

#[test]
fn serve_exports_the_backed_up_disk_to_real_nbd_clients() {
    let lab = Lab::up();
    lab.create_vm("web", &["64M"], &["VM Network"]);
    lab.guest_write("web", 0, "0", "8M", Some(1));
    lab.guest_write("web", 0, "40M", "4M", Some(2));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:web"]).ok();
    let gen1 = lab.digest("web", 0);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("web.sock");

    // Refusals first: a non-loopback address, an existing socket path, a missing disk.
    let r = lab.sk(&["serve", "vm:web", "--listen", "0.0.0.0:0"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--allow-remote"), "{}", r.stderr);
    let taken = tmp.path().join("taken");
    std::fs::write(&taken, b"not ours").unwrap();
    let r = lab.sk(&[
        "serve",
        "vm:web",
        "--listen",
        &format!("unix:{}", taken.display()),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(&taken).unwrap(),
        b"not ours",
        "never replaced"
    );
    let r = lab.sk(&[
        "serve",
        "vm:web",
        "--disk",
        "3",
        "--listen",
        "unix:/nonexistent/x",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no disk 3"), "{}", r.stderr);

    let child = serve(&lab, &socket, &["vm:web"]);
    let u = uri(&socket);
    let info: serde_json::Value = serde_json::from_str(&tool("nbdinfo", &["--json", &u])).unwrap();
    let export = &info["exports"][0];
    assert_eq!(export["export-size"], 64 * MIB, "{info}");
    assert_eq!(export["is_read_only"], true);
    // Holes are holes: only the two written areas are data.
    let m = map(&u);
    for at in [0, 7 * MIB, 40 * MIB, 43 * MIB] {
        assert_eq!(type_at(&m, at), 0, "data at {at}: {m:?}");
    }
    for at in [8 * MIB, 20 * MIB, 39 * MIB, 44 * MIB, 63 * MIB] {
        assert_eq!(type_at(&m, at), 3, "hole at {at}: {m:?}");
    }
    let raw = tmp.path().join("web.raw");
    tool("nbdcopy", &[&u, raw.to_str().unwrap()]);
    assert_eq!(
        sha256_file(&raw),
        gen1,
        "nbdcopy reads the disk as backed up"
    );
    let qcow = tmp.path().join("web.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &u,
            qcow.to_str().unwrap(),
        ],
    );
    tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
    // Writes are refused without an overlay.
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 7 0 4k", &u])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            || text.to_lowercase().contains("read-only")
            || text.contains("not permitted"),
        "write refused: {text}"
    );

    // Serve pins generation 1: a backup runs while the disk is served (it overwrites the
    // first MiB, so generation 1 alone holds those chunks)...
    lab.guest_write("web", 0, "0", "1M", Some(3));
    lab.sk(&["backup", "vm:web"]).ok();
    // ...and prune and gc run too, without waiting (a 1 s lock wait would fail): prune keeps
    // the pinned generation and says so, gc deletes nothing the serve reads.
    let impatient = lab.config_variant(
        "impatient.toml",
        "lock_wait_seconds = 60",
        "lock_wait_seconds = 1",
    );
    let r = lab
        .sk_with(&["prune", "vm:web", "--keep-last", "1"], &impatient, &[])
        .ok();
    assert!(
        r.stdout.contains("generation    1  keep")
            && r.stdout.contains("pinned by a running serve"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("0 generations removed"), "{}", r.stdout);
    let r = lab
        .sk_with(
            &["--json", "prune", "vm:web", "--keep-last", "1"],
            &impatient,
            &[],
        )
        .ok();
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let g1 = &doc["targets"][0]["generations"][1];
    assert_eq!(g1["generation"], 1, "{doc}");
    assert_eq!(g1["keep"], true, "{doc}");
    assert!(
        g1["reasons"]
            .to_string()
            .contains("pinned by a running serve"),
        "{doc}"
    );
    let r = lab.sk_with(&["--json", "gc"], &impatient, &[]).ok();
    let gc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(gc["generations_pinned"], 1, "{gc}");
    tool("nbdcopy", &[&u, raw.to_str().unwrap()]);
    assert_eq!(sha256_file(&raw), gen1, "generation 1 still served whole");
    stop(child, &socket);

    // The serve has ended: the next prune removes generation 1 and gc frees its own chunks.
    let r = lab.sk(&["prune", "vm:web", "--keep-last", "1"]).ok();
    assert!(r.stdout.contains("1 generation removed"), "{}", r.stdout);
    let r = lab.sk(&["--json", "gc"]).ok();
    let gc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(gc["generations_pinned"], 0, "{gc}");
    assert!(gc["chunks_removed"].as_u64().unwrap() > 0, "{gc}");
    let r = lab.sk(&[
        "serve",
        "vm:web",
        "--generation",
        "1",
        "--listen",
        "unix:/nonexistent/x",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("generation 1"), "{}", r.stderr);

    // Generation 2 is served with the new data.
    let child = serve(&lab, &socket, &["vm:web", "--generation", "2"]);
    let raw2 = tmp.path().join("web-gen2.raw");
    tool("nbdcopy", &[&uri(&socket), raw2.to_str().unwrap()]);
    stop(child, &socket);
    assert_eq!(sha256_file(&raw2), lab.digest("web", 0));
}

#[test]
fn overlay_takes_the_writes_and_the_repository_stays_unchanged() {
    let lab = Lab::up();
    lab.create_vm("db", &["32M"], &["VM Network"]);
    lab.guest_write("db", 0, "0", "4M", Some(5));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:db"]).ok();
    let original = lab.digest("db", 0);
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("db.sock");
    let overlay = tmp.path().join("db.overlay");
    let ov = overlay.to_str().unwrap();

    let child = serve(&lab, &socket, &["vm:db", "--overlay", ov]);
    let u = uri(&socket);
    // Over data (a partial block), into a hole, and zeroes over data.
    tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 1000 3000",
            "-c",
            "write -P 0xcd 20m 64k",
            "-c",
            "write -z 2m 8k",
            "-c",
            "flush",
            &u,
        ],
    );
    let out = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0xab 1000 3000",
            "-c",
            "read -P 0xcd 20m 64k",
            "-c",
            "read -P 0 2m 8k",
            &u,
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    // The written hole is data now.
    assert_eq!(type_at(&map(&u), 20 * MIB), 0);
    // SIGTERM (systemctl stop) stops as cleanly as Ctrl-C, the overlay flushed.
    let (code, stderr) = stop_with("TERM", child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!socket.exists());

    // The repository did not change: check reads every chunk, and the disk served without
    // the overlay is the original.
    lab.sk(&["check", "--read-data"]).ok();
    let child = serve(&lab, &socket, &["vm:db"]);
    let raw = tmp.path().join("db.raw");
    tool("nbdcopy", &[&uri(&socket), raw.to_str().unwrap()]);
    stop(child, &socket);
    assert_eq!(sha256_file(&raw), original);

    // Serving again with the same overlay continues it.
    let child = serve(&lab, &socket, &["vm:db", "--overlay", ov]);
    let out = tool(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0xcd 20m 64k",
            "-c",
            "read -P 0xab 1000 3000",
            &uri(&socket),
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    stop(child, &socket);
    // ... but not for another generation's disk.
    lab.sk(&["backup", "vm:db"]).ok();
    let r = lab.sk(&[
        "serve",
        "vm:db",
        "--overlay",
        ov,
        "--listen",
        &format!("unix:{}", socket.display()),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("belongs to"), "{}", r.stderr);
    assert!(!socket.exists());
}

#[path = "../../../guest-fs/tests/images/mod.rs"]
mod images;

use images::Expected;

/// Asserts the folder `out` holds exactly `expected` (FAT: no modes, no symlinks).
fn check_extracted(out: &Path, expected: &BTreeMap<String, Expected>, modes: bool) {
    let mut found = Vec::new();
    fn walk(base: &Path, dir: &Path, found: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            found.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if p.symlink_metadata().unwrap().is_dir() {
                walk(base, &p, found);
            }
        }
    }
    walk(out, out, &mut found);
    found.retain(|p| p != "lost+found");
    found.sort();
    assert_eq!(
        found,
        expected.keys().cloned().collect::<Vec<_>>(),
        "same entries in {}",
        out.display()
    );
    for (rel, want) in expected {
        let p = out.join(rel);
        let m = p.symlink_metadata().unwrap();
        match want {
            Expected::File { sha256, size, mode } => {
                assert!(m.is_file(), "{rel}");
                assert_eq!(m.len(), *size, "{rel}");
                assert_eq!(&sha256_file(&p), sha256, "{rel} content");
                if modes {
                    assert_eq!(m.permissions().mode() & 0o7777, *mode, "{rel} mode");
                }
            }
            Expected::Dir => assert!(m.is_dir(), "{rel}"),
            Expected::Symlink(t) => {
                assert!(m.file_type().is_symlink(), "{rel}");
                assert_eq!(
                    std::fs::read_link(&p).unwrap().to_string_lossy(),
                    t.as_str()
                );
            }
        }
        if !m.file_type().is_symlink() {
            assert!(
                (m.mtime() - images::MTIME).abs() <= 2,
                "{rel} mtime {}",
                m.mtime()
            );
        }
    }
    // The sparse file stayed sparse: 8 KiB of data in 3 MiB.
    let sparse = out.join("data/sparse.img").symlink_metadata().unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse output in {} ({} blocks)",
        out.display(),
        sparse.blocks()
    );
}

/// Fixed 1 MiB chunks (format 3), with a damaged chunk under one file at the end: the test
/// finds that chunk as the SHA-256 of the image's 1 MiB at a chunk-aligned offset, which only
/// fixed chunks make a chunk id.
#[test]
fn files_ls_and_get_read_ext4_fat_and_ntfs_from_a_backup() {
    files_ls_and_get("fixed");
}

/// The same reads from content-defined chunks (format 4, the default), without the damaged
/// chunk part (no chunk id is known ahead there).
#[test]
fn files_ls_and_get_read_ext4_fat_and_ntfs_from_content_defined_chunks() {
    files_ls_and_get("content-defined");
}

fn files_ls_and_get(chunking: &str) {
    let w = tempfile::tempdir().unwrap();
    let (src, src_fat) = (w.path().join("src"), w.path().join("src-fat"));
    let tree = images::source_tree(&src, true);
    let tree_fat = images::source_tree(&src_fat, false);
    let img = |n: &str| w.path().join(n);
    images::fat(&src_fat, &img("fat.img"), 40 * MIB);
    images::ext4(&src, &img("ext.img"), 32 * MIB);
    let ntfs = images::ntfs(&src, &img("ntfs.img"), 24 * MIB);
    assert!(ntfs, "ntfs-3g can mount here (FUSE)");
    images::partitioned(
        &img("disk0.img"),
        96 * MIB,
        "gpt",
        &[
            images::Part {
                image: &img("fat.img"),
                sfdisk_type: "U",
                start_mib: 1,
            },
            images::Part {
                image: &img("ext.img"),
                sfdisk_type: "L",
                start_mib: 42,
            },
        ],
        "",
    );
    images::partitioned(
        &img("disk1.img"),
        64 * MIB,
        "dos",
        &[],
        &format!(
            "start={}, type=5\nstart={}, size={}, type=7\n",
            2048,
            2 * 2048,
            24 * 2048
        ),
    );
    images::copy_into(&img("disk1.img"), &img("ntfs.img"), 2 * MIB);

    let lab = Lab::up();
    lab.create_vm("files", &["96M", "64M"], &["VM Network"]);
    for (d, f) in [("0", "disk0.img"), ("1", "disk1.img")] {
        let p = img(f);
        lab.lab(&[
            "guest-write",
            "--vm",
            "files",
            "--disk",
            d,
            "--offset",
            "0",
            "--from-file",
            p.to_str().unwrap(),
        ])
        .ok();
    }
    assert_eq!(
        lab.digest("files", 0),
        sha256_file(&img("disk0.img")),
        "guest-write --from-file"
    );
    lab.sk(&["repo", "init", "--chunking", chunking]).ok();
    lab.sk(&["backup", "vm:files"]).ok();

    // Partitions, numbered as Linux does.
    let j = lab.sk(&["--json", "files", "ls", "vm:files"]).ok().json();
    assert_eq!(j["table"], "gpt");
    let parts: Vec<(u64, String)> = j["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().unwrap(),
                p["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(parts, vec![(1, "fat".to_string()), (2, "ext4".to_string())]);
    let j = lab
        .sk(&["--json", "files", "ls", "vm:files", "--disk", "1"])
        .ok()
        .json();
    assert_eq!(j["table"], "mbr");
    assert_eq!(j["partitions"][1]["number"], 5);
    assert_eq!(j["partitions"][1]["content"], "ntfs");

    // A listing matches the source folder, with non-ASCII names and a symlink.
    let j = lab
        .sk(&["--json", "files", "ls", "vm:files", "--partition", "2", "/"])
        .ok()
        .json();
    let names: Vec<&str> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "Grüße",
            "bin",
            "data",
            "empty.txt",
            "lost+found",
            "notes-link",
            "readme.txt"
        ]
    );
    let link = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "notes-link")
        .unwrap();
    assert_eq!(link["kind"], "symlink");
    assert_eq!(link["link_target"], "data/nested/deeper/notes.md");
    let r = lab
        .sk(&[
            "files",
            "ls",
            "vm:files",
            "--partition",
            "2",
            "--long",
            "/data",
        ])
        .ok();
    assert!(
        r.stdout.contains("-rw-r----- ")
            && r.stdout.contains("big.bin")
            && r.stdout.contains("2024-02-29 12:34:56"),
        "{}",
        r.stdout
    );
    let r = lab.sk(&["files", "ls", "vm:files", "/data"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--partition"), "{}", r.stderr);

    // Whole trees out of ext4, FAT and NTFS, compared entry by entry.
    let out = w.path().join("out");
    let o = |n: &str| out.join(n);
    lab.sk(&[
        "files",
        "get",
        "vm:files",
        "--partition",
        "2",
        "/",
        "--output",
        o("ext").to_str().unwrap(),
    ])
    .ok();
    check_extracted(&o("ext"), &tree, true);
    lab.sk(&[
        "files",
        "get",
        "vm:files",
        "--partition",
        "1",
        "/",
        "--output",
        o("fat").to_str().unwrap(),
    ])
    .ok();
    check_extracted(&o("fat"), &tree_fat, false);
    lab.sk(&[
        "files",
        "get",
        "vm:files",
        "--disk",
        "1",
        "--partition",
        "5",
        "/",
        "--output",
        o("ntfs").to_str().unwrap(),
    ])
    .ok();
    check_extracted(&o("ntfs"), &tree, false);

    // One small file costs a few chunks (table, superblock, group descriptors, inodes,
    // directory, data), not a read of the 96-chunk disk.
    let j = lab
        .sk(&[
            "--json",
            "files",
            "get",
            "vm:files",
            "--partition",
            "2",
            "/data/nested/deeper/notes.md",
            "--output",
            o("small").to_str().unwrap(),
        ])
        .ok()
        .json();
    let chunks = j["chunks_read"].as_u64().unwrap();
    assert!(
        (1..=24).contains(&chunks),
        "{chunks} chunks read for one small file"
    );
    eprintln!("files get of one small file read {chunks} chunks ({chunking})");

    // No overwrite without --overwrite; with it the file is replaced.
    let one = o("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::write(one.join("readme.txt"), b"mine").unwrap();
    let r = lab.sk(&[
        "files",
        "get",
        "vm:files",
        "--partition",
        "2",
        "/readme.txt",
        "--output",
        one.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(r.all_output().contains("--overwrite"), "{}", r.all_output());
    assert_eq!(std::fs::read(one.join("readme.txt")).unwrap(), b"mine");
    lab.sk(&[
        "files",
        "get",
        "vm:files",
        "--partition",
        "2",
        "/readme.txt",
        "--output",
        one.to_str().unwrap(),
        "--overwrite",
    ])
    .ok();
    assert_eq!(
        std::fs::read(one.join("readme.txt")).unwrap(),
        b"safekeeping file-level restore\n"
    );

    if chunking != "fixed" {
        return;
    }
    // A damaged chunk under big.bin: that file fails, named; the others still extract.
    let disk0 = std::fs::read(img("disk0.img")).unwrap();
    let head = images::pattern(1, 4096);
    // In the ext4 partition (from 42 MiB): the FAT one holds a big.bin with the same bytes.
    let at = 42 * MIB
        + disk0[(42 * MIB) as usize..]
            .windows(4096)
            .position(|x| x == head)
            .expect("big.bin in partition 2") as u64;
    let slot = at.div_ceil(MIB) + 1;
    let chunk = &disk0[(slot * MIB) as usize..((slot + 1) * MIB) as usize];
    let id = images::sha256(chunk);
    let chunk_file = lab.dir().join("repo/chunks").join(&id[..4]).join(&id);
    let mut bytes = std::fs::read(&chunk_file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&chunk_file, bytes).unwrap();
    let two = o("two");
    let r = lab.sk(&[
        "files",
        "get",
        "vm:files",
        "--partition",
        "2",
        "/data/big.bin",
        "/readme.txt",
        "/data/nested",
        "--output",
        two.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 3, "partial: {}", r.all_output());
    assert!(r.stdout.contains("FAILED /data/big.bin"), "{}", r.stdout);
    // ...with the chunk, its file and where it is used, as the repository reports it.
    assert!(r.stdout.contains(&format!("chunk {id}")), "{}", r.stdout);
    assert!(!two.join("big.bin").exists(), "no partial file left");
    assert_eq!(
        std::fs::read(two.join("readme.txt")).unwrap(),
        b"safekeeping file-level restore\n"
    );
    assert!(two.join("nested/deeper/notes.md").is_file());
    assert!(std::fs::read_dir(&two).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".part")));
}

/// The lab's configuration with `[repository]` replaced by the S3 one `s3 up` wrote.
fn s3_config(lab: &Lab) -> std::path::PathBuf {
    let base = std::fs::read_to_string(lab.config()).unwrap();
    let s3 = std::fs::read_to_string(lab.dir().join("s3-repository.toml")).unwrap();
    let mut out = String::new();
    let mut in_repository = false;
    for line in base.lines() {
        if line.trim_start().starts_with('[') {
            in_repository = line.trim() == "[repository]";
            if in_repository {
                out.push_str(&s3);
                out.push('\n');
                continue;
            }
        }
        if !in_repository {
            out.push_str(line);
            out.push('\n');
        }
    }
    let path = lab.dir().join("s3-instant.toml");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn serve_and_files_read_an_s3_repository() {
    let lab = Lab::up();
    lab.lab(&["s3", "up"]).ok();
    struct Down<'a>(&'a Lab);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = self.0.lab(&["s3", "down"]);
        }
    }
    let _down = Down(&lab);
    let cfg = s3_config(&lab);
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src");
    let tree = images::source_tree(&src, true);
    let ext = w.path().join("ext.img");
    images::ext4(&src, &ext, 24 * MIB);
    lab.create_vm("s3i", &["32M"], &["VM Network"]);
    lab.lab(&[
        "guest-write",
        "--vm",
        "s3i",
        "--disk",
        "0",
        "--offset",
        "0",
        "--from-file",
        ext.to_str().unwrap(),
    ])
    .ok();
    let sk = |args: &[&str]| lab.sk_with(args, &cfg, &[]);
    sk(&["repo", "init"]).ok();
    sk(&["backup", "vm:s3i"]).ok();

    let socket = w.path().join("s3.sock");
    let child = serve_with(&cfg, &socket, &["vm:s3i"]);
    let raw = w.path().join("s3.raw");
    tool("nbdcopy", &[&uri(&socket), raw.to_str().unwrap()]);
    assert_eq!(sha256_file(&raw), lab.digest("s3i", 0));
    // A clean stop with the S3 backend and its lock heartbeat released.
    stop(child, &socket);

    let out = w.path().join("out");
    sk(&[
        "files",
        "get",
        "vm:s3i",
        "/",
        "--output",
        out.to_str().unwrap(),
    ])
    .ok();
    check_extracted(&out, &tree, true);
}

#[test]
fn serve_and_files_read_an_encrypted_repository() {
    let lab = Lab::up();
    let pass = lab.dir().join("repo-passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let cfg = lab.config_variant(
        "encrypted.toml",
        "[repository]\n",
        &format!("[repository]\npassphrase_file = \"{}\"\n", pass.display()),
    );
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src-fat");
    let tree = images::source_tree(&src, false);
    let fat = w.path().join("fat.img");
    images::fat(&src, &fat, 40 * MIB);
    lab.create_vm("enc", &["48M"], &["VM Network"]);
    lab.lab(&[
        "guest-write",
        "--vm",
        "enc",
        "--disk",
        "0",
        "--offset",
        "0",
        "--from-file",
        fat.to_str().unwrap(),
    ])
    .ok();
    let sk = |args: &[&str]| lab.sk_with(args, &cfg, &[]);
    sk(&["repo", "init", "--encrypt"]).ok();
    sk(&["backup", "vm:enc"]).ok();

    // Without the passphrase neither command gets anything.
    let r = lab.sk(&["files", "ls", "vm:enc"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is encrypted"), "{}", r.stderr);

    let socket = w.path().join("enc.sock");
    let child = serve_with(&cfg, &socket, &["vm:enc"]);
    let raw = w.path().join("enc.raw");
    tool("nbdcopy", &[&uri(&socket), raw.to_str().unwrap()]);
    stop(child, &socket);
    assert_eq!(sha256_file(&raw), lab.digest("enc", 0));

    // A FAT file system on the whole disk is partition 0, no --partition needed.
    let j = sk(&["--json", "files", "ls", "vm:enc"]).ok().json();
    assert_eq!(j["table"], "none");
    assert_eq!(j["partitions"][0]["content"], "fat");
    let out = w.path().join("out");
    sk(&[
        "files",
        "get",
        "vm:enc",
        "/",
        "--output",
        out.to_str().unwrap(),
    ])
    .ok();
    check_extracted(&out, &tree, false);
}

#[test]
fn a_killed_serves_pin_goes_stale_and_prune_removes_the_generation() {
    let lab = Lab::up();
    lab.create_vm("web", &["16M"], &[]);
    lab.guest_write("web", 0, "0", "2M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:web"]).ok();
    lab.guest_write("web", 0, "0", "2M", Some(2));
    lab.sk(&["backup", "vm:web"]).ok();
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("web.sock");

    // While the serve runs, prune keeps the pinned generation...
    let mut child = serve(&lab, &socket, &["vm:web", "--generation", "1"]);
    let r = lab
        .sk(&["--json", "prune", "vm:web", "--keep-last", "1", "--dry-run"])
        .ok();
    assert_eq!(
        r.json()["removed"].as_array().unwrap().len(),
        0,
        "{}",
        r.stdout
    );
    // ...and once it is killed (no cleanup at all), its pin names a process that is gone
    // from this machine: stale at once, and the generation goes.
    child.kill().unwrap();
    child.wait().unwrap();
    let r = lab.sk(&["prune", "vm:web", "--keep-last", "1"]).ok();
    assert!(
        r.stdout.contains("1 generation removed"),
        "{}",
        r.all_output()
    );
    assert!(
        r.all_output().contains("stale"),
        "the stale pin is reported: {}",
        r.all_output()
    );
}
