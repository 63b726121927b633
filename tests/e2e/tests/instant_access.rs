//! Instant access end to end: `serve` exports a backed-up disk over NBD to the real Debian
//! clients (nbdinfo, nbdcopy, qemu-img, qemu-io) — same bytes as the VM's disk, holes reported
//! as holes, writes only into `--overlay`, never into the repository — and `files ls|get`
//! read single files out of real ext4, FAT and NTFS images inside a backed-up disk.

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

    // The lock is shared: a backup runs while the disk is served.
    lab.guest_write("web", 0, "20M", "1M", Some(3));
    lab.sk(&["backup", "vm:web"]).ok();
    stop(child, &socket);

    // Generation 1 is still served as it was; generation 2 has the new data.
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
    stop(child, &socket);

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
