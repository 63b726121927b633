//! The server against the real NBD clients from Debian (libnbd's `nbdinfo` and `nbdcopy`,
//! QEMU's `qemu-img` and `qemu-io`): size, extents (holes reported as holes), whole-disk reads
//! equal to the source, and writes visible on the next read.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use nbd_server::{BlockDevice, Export, Extent, ListenAddress, Server};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// An in-memory disk of 1 MiB blocks; `None` blocks are holes.
struct MemoryDisk {
    blocks: Mutex<Vec<Option<Vec<u8>>>>,
    writable: bool,
}

impl MemoryDisk {
    fn new(blocks: Vec<Option<Vec<u8>>>, writable: bool) -> Self {
        MemoryDisk {
            blocks: Mutex::new(blocks),
            writable,
        }
    }
    fn image(&self) -> Vec<u8> {
        let b = self.blocks.lock().unwrap();
        b.iter()
            .flat_map(|x| x.clone().unwrap_or_else(|| vec![0; MIB]))
            .collect()
    }
}

impl BlockDevice for MemoryDisk {
    fn size(&self) -> u64 {
        (self.blocks.lock().unwrap().len() * MIB) as u64
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let b = self.blocks.lock().unwrap();
        for (i, byte) in buf.iter_mut().enumerate() {
            let pos = offset as usize + i;
            *byte = b[pos / MIB].as_ref().map_or(0, |d| d[pos % MIB]);
        }
        Ok(())
    }
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let b = self.blocks.lock().unwrap();
        let mut out: Vec<Extent> = Vec::new();
        let (mut pos, end) = (offset, offset + len);
        while pos < end {
            let block = pos as usize / MIB;
            let l = ((block + 1) * MIB) as u64 - pos;
            let l = l.min(end - pos);
            let hole = b[block].is_none();
            match out.last_mut() {
                Some(e) if e.hole == hole => e.len += l,
                _ => out.push(Extent { len: l, hole }),
            }
            pos += l;
        }
        Ok(out)
    }
    fn write_at(&self, offset: u64, data: &[u8], _fua: bool) -> io::Result<()> {
        let mut b = self.blocks.lock().unwrap();
        for (i, byte) in data.iter().enumerate() {
            let pos = offset as usize + i;
            b[pos / MIB].get_or_insert_with(|| vec![0; MIB])[pos % MIB] = *byte;
        }
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        self.write_at(offset, &vec![0; len as usize], fua)
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, false)
    }
}

/// A test disk: 8 MiB, blocks 0, 3 and 7 hold data, the rest are holes.
fn sample() -> Vec<Option<Vec<u8>>> {
    (0..8)
        .map(|i| {
            [0, 3, 7]
                .contains(&i)
                .then(|| (0..MIB).map(|j| (j * 7 + i * 13) as u8).collect())
        })
        .collect()
}

/// Serves `disk` on a unix socket in a background runtime; dropping the guard stops it.
struct Running {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(disk: Arc<MemoryDisk>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nbd.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = socket.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(&ListenAddress::Unix(s)).unwrap();
                ready_tx.send(()).unwrap();
                let export = Export {
                    name: "disk".into(),
                    description: "test disk".into(),
                    preferred_block_size: MIB as u32,
                };
                server
                    .run(disk, export, async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        ready_rx.recv().unwrap();
        Running {
            socket,
            stop: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }
    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
        assert!(!self.socket.exists(), "the socket file is removed at stop");
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
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
    String::from_utf8(out.stdout).unwrap()
}

fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn nbdinfo_reports_size_read_only_and_holes() {
    let disk = Arc::new(MemoryDisk::new(sample(), false));
    let srv = Running::start(disk);
    let info: serde_json::Value =
        serde_json::from_str(&run("nbdinfo", &["--json", &srv.uri()])).unwrap();
    let export = &info["exports"][0];
    assert_eq!(
        export["export-size"].as_u64(),
        Some(8 * MIB as u64),
        "{info:?}"
    );
    assert_eq!(export["is_read_only"].as_bool(), Some(true));
    assert_eq!(export["can_zero"].as_bool(), Some(false));
    assert_eq!(export["block_size_preferred"].as_u64(), Some(MIB as u64));
    // --map prints "offset length type description" per extent.
    let map = run("nbdinfo", &["--map", &srv.uri()]);
    let extents: Vec<(u64, u64, u32)> = map
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let m = MIB as u64;
    assert_eq!(
        extents,
        vec![
            (0, m, 0),
            (m, 2 * m, 3),
            (3 * m, m, 0),
            (4 * m, 3 * m, 3),
            (7 * m, m, 0)
        ],
        "holes are reported as holes:\n{map}"
    );
}

#[test]
fn nbdinfo_lists_the_export_with_its_name_and_description() {
    // --list uses NBD_OPT_LIST, then NBD_OPT_INFO (with NBD_INFO_NAME/DESCRIPTION) per export.
    let srv = Running::start(Arc::new(MemoryDisk::new(sample(), false)));
    let info: serde_json::Value =
        serde_json::from_str(&run("nbdinfo", &["--list", "--json", &srv.uri()])).unwrap();
    let e = &info["exports"][0];
    assert_eq!(e["export-name"], "disk", "{info}");
    assert_eq!(e["description"], "test disk");
    assert_eq!(e["export-size"].as_u64(), Some(8 * MIB as u64));
}

#[test]
fn nbdcopy_and_qemu_img_read_the_whole_disk() {
    let disk = Arc::new(MemoryDisk::new(sample(), false));
    let expected = hex::encode(Sha256::digest(disk.image()));
    let srv = Running::start(disk);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("copy.raw");
    run("nbdcopy", &[&srv.uri(), raw.to_str().unwrap()]);
    assert_eq!(sha(&raw), expected, "nbdcopy reads the source bytes");
    let qcow = dir.path().join("copy.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &srv.uri(),
            qcow.to_str().unwrap(),
        ],
    );
    run(
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
    // The holes stayed holes: qcow2 allocates only the three data blocks.
    let map = run(
        "qemu-img",
        &["map", "--output=json", qcow.to_str().unwrap()],
    );
    let data_blocks = map.matches("\"data\": true").count();
    assert!(
        (1..=3).contains(&data_blocks),
        "only data blocks allocated:\n{map}"
    );
}

#[test]
fn writes_are_visible_on_the_next_read_and_refused_when_read_only() {
    let disk = Arc::new(MemoryDisk::new(sample(), true));
    let srv = Running::start(disk.clone());
    // A write into a hole and across a block boundary, then a zeroing write.
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 1536k 1m",
            "-c",
            "write -z 0 4k",
            "-c",
            "flush",
            &srv.uri(),
        ],
    );
    let out = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0xab 1536k 1m",
            "-c",
            "read -P 0 0 4k",
            &srv.uri(),
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let img = disk.image();
    assert!(img[1536 * 1024..2560 * 1024].iter().all(|&b| b == 0xab));
    assert!(img[..4096].iter().all(|&b| b == 0));
    drop(srv);

    let ro = Running::start(Arc::new(MemoryDisk::new(sample(), false)));
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 1 0 4k", &ro.uri()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success()
            || text.contains("read-only")
            || text.contains("Operation not permitted"),
        "write refused: {text}"
    );
}

#[test]
fn a_tcp_listener_on_port_0_serves_at_the_chosen_port() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(&ListenAddress::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
            addr_tx
                .send((server.address().clone(), server.address().uri()))
                .unwrap();
            let export = Export {
                name: "disk".into(),
                description: String::new(),
                preferred_block_size: 4096,
            };
            let disk = Arc::new(MemoryDisk::new(sample(), false));
            server
                .run(disk, export, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
    });
    let (address, uri) = addr_rx.recv().unwrap();
    let ListenAddress::Tcp(addr) = address else {
        panic!("tcp")
    };
    assert_ne!(addr.port(), 0, "the chosen port is reported");
    assert_eq!(uri, format!("nbd://{addr}"));
    let info: serde_json::Value = serde_json::from_str(&run("nbdinfo", &["--json", &uri])).unwrap();
    assert_eq!(
        info["exports"][0]["export-size"].as_u64(),
        Some(8 * MIB as u64)
    );
    tx.send(()).unwrap();
    t.join().unwrap();
}
