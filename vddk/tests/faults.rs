//! Fault injection and latency from the fake's config (re-read at every Open), inline async
//! completion, and two processes reading one flat file at the same time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vddk::{codes, ConnectOptions, OpenFlags, Vddk};

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The only test in this process that reads, so the process-wide read count is predictable.
#[test]
fn injected_faults_and_latency() {
    let lab = Lab::new("faults", "fake.fail_read_nth = 3\n");
    let content = pattern(1 << 20, 9);
    let path = lab.make_disk("f/f.vmdk", 2048, 1 << 20, &[(0, &content)]);
    let vddk = Vddk::load(&lab.libdir).unwrap();
    vddk.init(Some(&lab.config)).unwrap();
    let opts = ConnectOptions {
        read_only: true,
        ..Default::default()
    };
    let conn = vddk.connect(&good_params(), &opts).unwrap();
    let mut buf = vec![0u8; 4096];

    // The 3rd read of the process fails with a realistic I/O error; the others succeed.
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    disk.read(0, &mut buf).unwrap();
    disk.read(8, &mut buf).unwrap();
    let err = disk.read(16, &mut buf).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FILE_ERROR));
    assert!(err.to_string().contains("VixDiskLib_Read failed"), "{err}");
    disk.read(16, &mut buf).unwrap();
    assert_eq!(&buf[..], &content[16 * 512..16 * 512 + 4096]);
    drop(disk);

    // A failing sector range, with a chosen error code; the config is re-read at Open.
    lab.write_config("fake.fail_read_sectors = 100-199\nfake.fail_read_code = 16007\n");
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    disk.read(92, &mut buf).unwrap(); // sectors 92..100
    for start in [100, 150, 199] {
        let err = disk.read(start, &mut buf[..512]).unwrap_err();
        assert_eq!(
            err.vix_code(),
            Some(codes::VIX_E_DISK_OUTOFRANGE),
            "sector {start}"
        );
    }
    disk.read(200, &mut buf).unwrap();
    // Async reads report the fault in their completion.
    disk.read_async(0, vec![0; 4096]).unwrap();
    disk.read_async(96, vec![0; 4096]).unwrap();
    let done = disk.wait().unwrap();
    assert!(done[0].result.is_ok());
    assert_eq!(
        done[1].result.as_ref().unwrap_err().code,
        codes::VIX_E_DISK_OUTOFRANGE
    );
    drop(disk);
    let close = lab.events("close", &path);
    let last = close.last().unwrap();
    assert_eq!(
        last["read_ranges"],
        serde_json::json!([[0, 8], [92, 8], [200, 8]])
    );

    // Inline completion: the callback runs inside ReadAsync itself.
    lab.write_config("fake.async_inline = true\n");
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    disk.read_async(8, vec![0; 4096]).unwrap();
    let done = disk.take_completed();
    assert_eq!(done.len(), 1, "completed before ReadAsync returned");
    assert_eq!(&done[0].buffer[..], &content[8 * 512..8 * 512 + 4096]);
    assert!(disk.wait().unwrap().is_empty());
    drop(disk);

    // Latency on reads and writes; async requests overlap theirs, as over NBD.
    lab.write_config("fake.read_latency_ms = 40\nfake.write_latency_ms = 40\n");
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let t = Instant::now();
    for i in 0..5 {
        disk.read(i * 8, &mut buf).unwrap();
    }
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    for i in 0..8 {
        disk.read_async(i * 8, vec![0; 4096]).unwrap();
    }
    let done = disk.wait().unwrap();
    let elapsed = t.elapsed();
    assert_eq!(done.len(), 8);
    assert!(done.iter().all(|c| c.result.is_ok()));
    assert!(elapsed >= Duration::from_millis(80), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(320),
        "not overlapped: {elapsed:?}"
    );
    drop(disk);
    let rw = vddk
        .connect(&good_params(), &ConnectOptions::default())
        .unwrap();
    let mut disk = rw.open(&path, OpenFlags::NONE).unwrap();
    let t = Instant::now();
    disk.write(0, &content[..4096]).unwrap();
    disk.write(8, &content[4096..8192]).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(80),
        "{:?}",
        t.elapsed()
    );

    // Nothing configured: no faults.
    lab.write_config("");
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let mut all = vec![0u8; 1 << 20];
    disk.read(0, &mut all).unwrap();
    assert_eq!(all, content);

    // A broken config file is reported at Open.
    std::fs::write(&lab.config, "fake.fail_read_nth = many\n").unwrap();
    let err = conn.open(&path, OpenFlags::READ_ONLY).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FAIL));
}

#[test]
fn two_processes_read_the_same_flat_file() {
    let lab = Lab::new("twoproc", "");
    let content = pattern(8 << 20, 10);
    let path = lab.make_disk("shared/s.vmdk", (8 << 20) / 512, 8 << 20, &[(0, &content)]);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--ignored", "--exact", "child_reader", "--nocapture"])
                .env("VDDK_CHILD_LIBDIR", &lab.libdir)
                .env("VDDK_CHILD_CONFIG", &lab.config)
                .env("VDDK_CHILD_DISK", &path)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let expected = format!("DIGEST {:016x}", fnv(&content, FNV_START));
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&expected), "{text}");
    }
    let closes = lab.events("close", &path);
    assert_eq!(closes.len(), 2);
    assert_ne!(closes[0]["pid"], closes[1]["pid"]);
    for c in closes {
        assert_eq!(c["sectors_read"], (8 << 20) / 512);
    }
}

/// Run by `two_processes_read_the_same_flat_file` in child processes.
#[test]
#[ignore = "helper process of two_processes_read_the_same_flat_file"]
fn child_reader() {
    let libdir = std::env::var_os("VDDK_CHILD_LIBDIR").expect("run by the parent test");
    let config = std::env::var_os("VDDK_CHILD_CONFIG").unwrap();
    let disk_path = std::env::var("VDDK_CHILD_DISK").unwrap();
    let vddk = Vddk::load(libdir.as_ref()).unwrap();
    vddk.init(Some(config.as_ref())).unwrap();
    let conn = vddk
        .connect(
            &good_params(),
            &ConnectOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut disk = conn.open(&disk_path, OpenFlags::READ_ONLY).unwrap();
    let cap = disk.info().capacity_sectors;
    let mut buf = vec![0u8; 64 * 1024];
    let mut h = FNV_START;
    let mut pos = 0;
    while pos < cap {
        disk.read(pos, &mut buf).unwrap();
        h = fnv(&buf, h);
        pos += 128;
    }
    println!("DIGEST {h:016x}");
}
