//! Sequential read throughput of a disk through the vddk wrappers and the fake VDDK, sync and
//! async, at request sizes from 64 KiB to 4 MiB, against `cat file > /dev/null` of the same
//! flat file in the same run.
//!
//! `cargo bench -p vddk --bench read`; `VDDK_BENCH_MIB` sets the disk size (default 2048).
//! The page cache cannot be dropped here, so `cat` runs first to warm it and every figure is a
//! warm-cache figure; the ratios compare the wrappers' overhead with plain `read(2)`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{good_params, Lab};
use vddk::{ConnectOptions, OpenFlags, Vddk};

const KIB: usize = 1024;
/// Every figure is the best of this many passes: the machine is shared, so the fastest pass
/// is the one least disturbed by other work.
const RUNS: usize = 3;

fn fill_random(path: &std::path::Path, bytes: u64) {
    let mut f = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes / (1 << 20) {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn time_cat(path: &std::path::Path) -> f64 {
    let t = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cat '{}' > /dev/null", path.display()))
        .status()
        .expect("run cat");
    assert!(status.success());
    t.elapsed().as_secs_f64()
}

fn main() {
    let mib: u64 = std::env::var("VDDK_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let bytes = mib << 20;
    let lab = Lab::new("bench-read", "");
    let path = lab.make_disk("bench/bench.vmdk", bytes / 512, 0, &[]);
    let flat = lab.flat_path("bench/bench.vmdk");
    eprintln!("writing {mib} MiB of random data to {}", flat.display());
    fill_random(&flat, bytes);

    let vddk = Vddk::load(&lab.libdir).expect("load fake VDDK");
    vddk.init(Some(&lab.config)).expect("init");
    let conn = vddk
        .connect(
            &good_params(),
            &ConnectOptions {
                read_only: true,
                snapshot_moref: None,
                transports: Some("nbdssl".into()),
            },
        )
        .expect("connect");

    time_cat(&flat); // warm the page cache
    let cat = (0..RUNS).map(|_| time_cat(&flat)).fold(f64::MAX, f64::min);
    let cat_rate = mib_per_s(bytes, cat);
    println!("disk {mib} MiB, warm page cache, best of {RUNS} passes");
    println!("{:<28} {:>10} {:>8}", "method", "MiB/s", "vs cat");
    println!("{:<28} {:>10.0} {:>8.2}", "cat > /dev/null", cat_rate, 1.0);

    for size in [64 * KIB, 256 * KIB, 1024 * KIB, 4096 * KIB] {
        let sectors = (size / 512) as u64;
        let total = bytes / 512;

        let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
        let mut buf = vec![0u8; size];
        let mut sum = 0u64;
        let mut sync = f64::MAX;
        for _ in 0..RUNS {
            let t = Instant::now();
            let mut pos = 0;
            while pos < total {
                let n = sectors.min(total - pos) as usize * 512;
                disk.read(pos, &mut buf[..n]).unwrap();
                sum = sum.wrapping_add(buf[0] as u64);
                pos += sectors;
            }
            sync = sync.min(t.elapsed().as_secs_f64());
        }
        black_box(sum);

        const DEPTH: usize = 4;
        let mut free: Vec<Vec<u8>> = (0..DEPTH).map(|_| vec![0u8; size]).collect();
        let mut asynchronous = f64::MAX;
        for _ in 0..RUNS {
            let t = Instant::now();
            let mut pos = 0;
            let mut got = 0u64;
            while pos < total || disk.in_flight() > 0 {
                while pos < total {
                    let Some(mut b) = free.pop() else { break };
                    b.resize(sectors.min(total - pos) as usize * 512, 0);
                    disk.read_async(pos, b).unwrap();
                    pos += sectors;
                }
                for c in disk.wait_any(Duration::from_secs(1)).unwrap() {
                    c.result.unwrap();
                    got += c.buffer.len() as u64;
                    sum = sum.wrapping_add(c.buffer[0] as u64);
                    free.push(c.buffer);
                }
            }
            asynchronous = asynchronous.min(t.elapsed().as_secs_f64());
            assert_eq!(got, bytes);
        }
        black_box(sum);
        disk.close().unwrap();

        let (s, a) = (mib_per_s(bytes, sync), mib_per_s(bytes, asynchronous));
        println!(
            "{:<28} {:>10.0} {:>8.2}",
            format!("sync read {} KiB", size / KIB),
            s,
            s / cat_rate
        );
        println!(
            "{:<28} {:>10.0} {:>8.2}",
            format!("async read {} KiB x{DEPTH}", size / KIB),
            a,
            a / cat_rate
        );
    }
    drop(conn);
    latency_table(&vddk, &lab, &path);
    let _ = std::fs::remove_dir_all(&lab.root);
}

/// With 1 ms added to every request (a stand-in for NBD round trips), async requests overlap
/// their latency (the fake runs up to 8 at once); reads the first 256 MiB in 1 MiB requests.
fn latency_table(vddk: &Vddk, lab: &Lab, path: &str) {
    lab.write_config("fake.read_latency_ms = 1\nfake.async_threads = 8\n");
    let conn = vddk
        .connect(
            &good_params(),
            &ConnectOptions {
                read_only: true,
                snapshot_moref: None,
                transports: None,
            },
        )
        .expect("connect");
    let mut disk = conn.open(path, OpenFlags::READ_ONLY).unwrap();
    let (size, total) = (1usize << 20, 256u64 << 20);
    let sectors = (size / 512) as u64;
    let t = Instant::now();
    let mut buf = vec![0u8; size];
    for i in 0..total / size as u64 {
        disk.read(i * sectors, &mut buf).unwrap();
    }
    let sync = mib_per_s(total, t.elapsed().as_secs_f64());
    println!("with 1 ms latency per request, 1 MiB requests, first 256 MiB");
    println!("{:<28} {:>10.0}", "sync read", sync);
    for depth in [4usize, 8] {
        let t = Instant::now();
        let mut next = 0u64;
        let mut free: Vec<Vec<u8>> = (0..depth).map(|_| vec![0u8; size]).collect();
        while next < total / 512 || disk.in_flight() > 0 {
            while next < total / 512 {
                let Some(b) = free.pop() else { break };
                disk.read_async(next, b).unwrap();
                next += sectors;
            }
            for c in disk.wait_any(Duration::from_secs(1)).unwrap() {
                c.result.unwrap();
                free.push(c.buffer);
            }
        }
        let rate = mib_per_s(total, t.elapsed().as_secs_f64());
        println!(
            "{:<28} {:>10.0} {:>7.1}x",
            format!("async read x{depth}"),
            rate,
            rate / sync
        );
    }
    lab.write_config("");
}
