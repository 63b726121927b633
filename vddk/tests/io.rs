//! Reading, writing, bounds, allocated blocks, async I/O and Create through the fake VDDK.

mod common;

use std::os::unix::io::AsRawFd;
use std::sync::OnceLock;

use common::*;
use vddk::{
    codes, Adapter, ConnectOptions, ConnectParams, CreateParams, Error, IoKind, OpenFlags, Vddk,
};

fn lab() -> &'static (Lab, Vddk) {
    static LAB: OnceLock<(Lab, Vddk)> = OnceLock::new();
    LAB.get_or_init(|| {
        let lab = Lab::new("io", "");
        let vddk = Vddk::load(&lab.libdir).expect("load fake VDDK");
        vddk.init(Some(&lab.config)).expect("init");
        (lab, vddk)
    })
}

fn connect(read_only: bool) -> vddk::Connection {
    let (_, vddk) = lab();
    vddk.connect(
        &good_params(),
        &ConnectOptions {
            read_only,
            snapshot_moref: Some("snapshot-1".into()),
            transports: None,
        },
    )
    .expect("connect")
}

#[test]
fn read_write_round_trip_and_info() {
    let (lab, _) = lab();
    let path = lab.make_disk("rw/rw.vmdk", 4096, 4096 * 512, &[]);
    let conn = connect(false);
    let mut disk = conn.open(&path, OpenFlags::NONE).unwrap();
    let info = disk.info().clone();
    assert_eq!(info.capacity_sectors, 4096);
    assert_eq!(info.capacity_bytes(), 4096 * 512);
    assert_eq!(info.adapter, Adapter::LsiLogic);
    assert_eq!(info.physical_geometry.heads, 255);
    assert_eq!(info.links, 1);
    assert_eq!(
        info.uuid.as_deref(),
        Some("60 00 C2 9a 11 22 33 44-55 66 77 88 99 aa bb cc")
    );
    assert_eq!(info.logical_sector_size, Some(512));
    assert_eq!(disk.transport_mode().as_deref(), Some("nbdssl"));

    let data = pattern(64 * 1024, 1);
    disk.write(100, &data).unwrap();
    disk.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    disk.read(100, &mut back).unwrap();
    assert_eq!(back, data);
    // The bytes landed at the right place of the flat file.
    let flat = std::fs::read(lab.flat_path("rw/rw.vmdk")).unwrap();
    assert_eq!(&flat[100 * 512..100 * 512 + data.len()], &data[..]);
}

#[test]
fn bounds_and_sizes_are_checked_before_vddk() {
    let (lab, _) = lab();
    let path = lab.make_disk("bounds/b.vmdk", 1000, 1000 * 512, &[]);
    let conn = connect(false);
    let mut disk = conn.open(&path, OpenFlags::NONE).unwrap();
    let mut buf = vec![0u8; 1024];
    assert!(disk.read(999, &mut buf[..512]).is_ok());
    match disk.read(999, &mut buf) {
        Err(Error::OutOfRange {
            start: 999,
            end: 1001,
            capacity: 1000,
        }) => {}
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    assert!(matches!(
        disk.read(0, &mut buf[..100]),
        Err(Error::NotSectorMultiple { len: 100 })
    ));
    assert!(matches!(
        disk.write(u64::MAX, &buf),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        disk.read_async(1000, vec![0; 512]),
        Err(Error::OutOfRange { .. })
    ));
    // Nothing out of range ever reached the library.
    drop(disk);
    let close = lab.events("close", &path);
    assert_eq!(close.last().unwrap()["read_calls"], 1);
}

#[test]
fn short_flat_file_reads_as_zeros() {
    let (lab, _) = lab();
    let head = pattern(4096, 2);
    let path = lab.make_disk("short/s.vmdk", 2048, 4096, &[(0, &head)]);
    let conn = connect(true);
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let mut buf = vec![0xFFu8; 16 * 512];
    disk.read(0, &mut buf).unwrap();
    assert_eq!(&buf[..4096], &head[..]);
    assert!(buf[4096..].iter().all(|b| *b == 0));
    let mut tail = vec![0xFFu8; 512];
    disk.read(2047, &mut tail).unwrap();
    assert!(tail.iter().all(|b| *b == 0));
}

#[test]
fn read_only_refuses_writes() {
    let (lab, _) = lab();
    let path = lab.make_disk("ro/ro.vmdk", 256, 256 * 512, &[]);
    // Read-only connection: refused by the wrapper before VDDK.
    let conn = connect(true);
    let mut disk = conn.open(&path, OpenFlags::NONE).unwrap();
    assert!(disk.is_read_only());
    assert!(matches!(
        disk.write(0, &[0; 512]),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        disk.write_async(0, vec![0; 512]),
        Err(Error::ReadOnly { .. })
    ));
    drop(disk);
    // A disk whose descriptor says RDONLY: VDDK itself refuses with VIX_E_FILE_READ_ONLY.
    let rd = lab.make_disk_with("ro/rdonly.vmdk", 256, 0, &[], "RDONLY");
    let conn = connect(false);
    let mut disk = conn.open(&rd, OpenFlags::NONE).unwrap();
    let err = disk.write(0, &[1; 512]).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FILE_READ_ONLY));
    assert!(err.to_string().contains("VixDiskLib_Write failed"), "{err}");
    assert!(err.to_string().contains("write-protected"), "{err}");
}

/// Data regions of `path` in sectors, by SEEK_DATA/SEEK_HOLE, widened to `chunk` sectors.
fn seek_data_chunks(path: &std::path::Path, len: u64, chunk: u64) -> Vec<(u64, u64)> {
    let f = std::fs::File::open(path).unwrap();
    let fd = f.as_raw_fd();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0i64;
    loop {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= len {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) } as u64;
        let first = data as u64 / 512 / chunk * chunk;
        let last = (hole.min(len).div_ceil(512)).div_ceil(chunk) * chunk;
        match out.last_mut() {
            Some(p) if first <= p.0 + p.1 => p.1 = last.max(p.0 + p.1) - p.0,
            _ => out.push((first, last - first)),
        }
        pos = hole as i64;
    }
    out
}

#[test]
fn allocated_blocks_match_seek_data() {
    let (lab, _) = lab();
    let mib = 1u64 << 20;
    let a = pattern(4096, 3);
    let b = pattern(200 * 1024, 4);
    let path = lab.make_disk(
        "sparse/sp.vmdk",
        16 * mib / 512,
        16 * mib,
        &[(mib, &a), (9 * mib + 4096, &b)],
    );
    let conn = connect(true);
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let cap = disk.info().capacity_sectors;
    let blocks = disk.query_allocated_blocks(0, cap, 128).unwrap();
    let got: Vec<(u64, u64)> = blocks.iter().map(|b| (b.offset, b.length)).collect();
    let expected = seek_data_chunks(&lab.flat_path("sparse/sp.vmdk"), 16 * mib, 128);
    assert_eq!(got, expected);
    // Whatever the file system's granularity, the written regions are covered...
    for (off, len) in [(mib, 4096u64), (9 * mib + 4096, 200 * 1024)] {
        let (s, e) = (off / 512, (off + len) / 512);
        assert!(
            blocks.iter().any(|b| b.offset <= s && b.end() >= e),
            "{s}..{e} not covered by {blocks:?}"
        );
    }
    // ... and on a file system with holes, most of the disk is not reported.
    let total: u64 = blocks.iter().map(|b| b.length).sum();
    if expected.len() > 1 {
        assert!(total < cap / 2, "{total} of {cap}");
    }
    // Argument checks.
    assert!(matches!(
        disk.query_allocated_blocks(0, cap, 64),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        disk.query_allocated_blocks(100, 128, 128),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        disk.query_allocated_blocks(0, cap + 128, 128),
        Err(Error::OutOfRange { .. })
    ));
}

#[test]
fn allocated_blocks_split_into_calls_within_vddk_limits() {
    let (lab, _) = lab();
    // 40 GiB capacity: more than 512Ki chunks of 128 sectors, so two calls. The flat file
    // holds only its first sector; the rest reads as zeros and is not allocated.
    let cap = 40u64 << 21;
    let head = pattern(512, 5);
    let path = lab.make_disk("huge/h.vmdk", cap, 512, &[(0, &head)]);
    let conn = connect(true);
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let blocks = disk.query_allocated_blocks(0, cap, 128).unwrap();
    assert_eq!(
        blocks,
        vec![vddk::Block {
            offset: 0,
            length: 128
        }]
    );
    drop(disk);
    let close = lab.events("close", &path);
    assert_eq!(close.last().unwrap()["query_allocated_calls"], 2);
    assert_eq!(close.last().unwrap()["sectors_read"], 0);
}

fn assert_send<T: Send + 'static>() {}

#[test]
fn handles_are_send_and_static() {
    assert_send::<vddk::Disk>();
    assert_send::<vddk::Connection>();
    assert_send::<Vddk>();
}

#[test]
fn async_reads_and_writes_complete_with_their_buffers() {
    let (lab, _) = lab();
    let content = pattern(1 << 20, 6);
    let path = lab.make_disk("async/a.vmdk", 4096, 1 << 20, &[(0, &content)]);
    let conn = connect(false);
    let mut disk = conn.open(&path, OpenFlags::UNBUFFERED).unwrap();
    let mut ids = Vec::new();
    for i in 0..8u64 {
        ids.push(disk.read_async(i * 256, vec![0u8; 256 * 512]).unwrap());
    }
    let done = disk.wait().unwrap();
    assert_eq!(disk.in_flight(), 0);
    assert_eq!(done.len(), 8);
    for (i, c) in done.iter().enumerate() {
        assert_eq!(c.id, ids[i]);
        assert_eq!(c.kind, IoKind::Read);
        c.result.as_ref().unwrap();
        let off = c.start_sector as usize * 512;
        assert_eq!(&c.buffer[..], &content[off..off + c.buffer.len()]);
    }
    let data = pattern(128 * 512, 7);
    disk.write_async(2048, data.clone()).unwrap();
    disk.flush().unwrap(); // waits for the write; its completion stays collectable
    let done = disk.take_completed();
    assert_eq!(done[0].kind, IoKind::Write);
    assert_eq!(done[0].buffer, data);
    let mut back = vec![0u8; data.len()];
    disk.read(2048, &mut back).unwrap();
    assert_eq!(back, data);
    // A pipeline keeping four requests in flight with wait_any.
    let mut next = 0u64;
    let mut seen = 0;
    while next < 4096 || disk.in_flight() > 0 {
        while next < 4096 && disk.in_flight() < 4 {
            disk.read_async(next, vec![0u8; 128 * 512]).unwrap();
            next += 128;
        }
        let done = disk.wait_any(std::time::Duration::from_secs(5)).unwrap();
        assert!(!done.is_empty());
        for c in done {
            c.result.unwrap();
            let off = c.start_sector as usize * 512;
            if off < content.len() {
                let end = (off + c.buffer.len()).min(content.len());
                assert_eq!(&c.buffer[..end - off], &content[off..end]);
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 32);
    assert!(disk
        .wait_any(std::time::Duration::from_secs(1))
        .unwrap()
        .is_empty());
    // Requests left in flight are waited for when the disk is dropped.
    disk.read_async(0, vec![0; 512]).unwrap();
    drop(disk);
    assert!(
        lab.events("close", &path).last().unwrap()["read_calls"]
            .as_u64()
            .unwrap()
            >= 10
    );
}

#[test]
fn shared_writes_read_ranges_of_one_buffer_and_release_it_on_completion() {
    let (lab, _) = lab();
    let path = lab.make_disk("shared/s.vmdk", 4096, 1 << 20, &[]);
    let conn = connect(false);
    let mut disk = conn.open(&path, OpenFlags::UNBUFFERED).unwrap();
    let data = std::sync::Arc::new(pattern(64 * 512, 9));
    let shared: vddk::SharedBuffer = data.clone();
    // Two runs of the buffer, at their own places on the disk; the middle is left alone.
    disk.write_async_shared(100, shared.clone(), 0..16 * 512)
        .unwrap();
    disk.write_async_shared(148, shared.clone(), 48 * 512..64 * 512)
        .unwrap();
    drop(shared);
    // Out of the buffer, or not whole sectors: refused before VDDK, nothing in flight.
    let whole: vddk::SharedBuffer = data.clone();
    assert!(matches!(
        disk.write_async_shared(0, whole.clone(), 0..65 * 512),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        disk.write_async_shared(0, whole.clone(), 0..100),
        Err(Error::NotSectorMultiple { .. })
    ));
    drop(whole);
    let done = disk.wait().unwrap();
    assert_eq!(done.len(), 2);
    for c in &done {
        c.result.as_ref().unwrap();
        assert_eq!(c.kind, IoKind::Write);
        assert_eq!(c.len, 16 * 512);
        assert!(c.buffer.is_empty());
    }
    // Both writes are collected: only the test's handle is left.
    assert_eq!(std::sync::Arc::strong_count(&data), 1);
    let mut back = vec![0u8; 64 * 512];
    disk.read(100, &mut back).unwrap();
    assert_eq!(&back[..16 * 512], &data[..16 * 512]);
    assert!(back[16 * 512..48 * 512].iter().all(|&b| b == 0));
    assert_eq!(&back[48 * 512..], &data[48 * 512..]);
}

#[test]
fn stats_prove_what_was_read() {
    let (lab, _) = lab();
    let path = lab.make_disk("stats/st.vmdk", 8192, 8192 * 512, &[]);
    let conn = connect(true);
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let mut buf = vec![0u8; 64 * 512];
    disk.read(0, &mut buf).unwrap();
    disk.read(64, &mut buf).unwrap();
    disk.read(1000, &mut buf[..512]).unwrap();
    disk.close().unwrap();
    let close = lab.events("close", &path);
    let line = close.last().unwrap();
    assert_eq!(line["sectors_read"], 129);
    assert_eq!(line["read_calls"], 3);
    assert_eq!(line["sectors_written"], 0);
    assert_eq!(
        line["read_ranges"],
        serde_json::json!([[0, 128], [1000, 1]])
    );
    assert_eq!(line["pid"], std::process::id());
    assert_eq!(line["transport"], "nbdssl");
}

#[test]
fn create_makes_a_vmfs_flat_disk() {
    let (lab, vddk) = lab();
    // Remote connection, datastore path.
    let conn = connect(false);
    let mut params = CreateParams::new(20480);
    params.adapter = Adapter::Ide;
    // The folder must exist, as on a real datastore.
    let err = conn.create("[ds1] new/new.vmdk", &params).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FILE_NOT_FOUND));
    std::fs::create_dir_all(lab.datastore.join("new")).unwrap();
    vddk.create(&conn, "[ds1] new/new.vmdk", params.clone())
        .unwrap();
    let desc = std::fs::read_to_string(lab.datastore.join("new/new.vmdk")).unwrap();
    assert!(desc.contains("createType=\"vmfs\""), "{desc}");
    assert!(desc.contains("RW 20480 VMFS \"new-flat.vmdk\""), "{desc}");
    assert!(desc.contains("ddb.adapterType = \"ide\""), "{desc}");
    let flat = std::fs::metadata(lab.datastore.join("new/new-flat.vmdk")).unwrap();
    assert_eq!(flat.len(), 20480 * 512);
    let mut disk = conn.open("[ds1] new/new.vmdk", OpenFlags::NONE).unwrap();
    assert_eq!(disk.info().capacity_sectors, 20480);
    assert_eq!(disk.info().adapter, Adapter::Ide);
    disk.write(20479, &[7u8; 512]).unwrap();
    drop(disk);
    let err = conn.create("[ds1] new/new.vmdk", &params).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FILE_ALREADY_EXISTS));

    // Local connection, absolute path, transport "file".
    let local = vddk
        .connect(&ConnectParams::local(), &ConnectOptions::default())
        .unwrap();
    let abs = lab.root.join("local.vmdk");
    local
        .create(abs.to_str().unwrap(), &CreateParams::new(128))
        .unwrap();
    let disk = local.open(abs.to_str().unwrap(), OpenFlags::NONE).unwrap();
    assert_eq!(disk.transport_mode().as_deref(), Some("file"));
    assert_eq!(local.transport_mode().as_deref(), Some("file"));
    assert!(matches!(
        conn.create("[ds1] z.vmdk", &CreateParams::new(0)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn disks_keep_their_connection_alive_and_move_between_threads() {
    let (lab, vddk) = lab();
    let content = pattern(512 * 1024, 8);
    let path = lab.make_disk("threads/t.vmdk", 1024, 512 * 1024, &[(0, &content)]);
    let params = vddk::ConnectParams::vm("vm-threads")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(vddk::Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        });
    let conn = vddk
        .connect(
            &params,
            &ConnectOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    let d1 = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let d2 = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    assert!(matches!(conn.disconnect(), Err(Error::InUse(2))));
    let handles: Vec<_> = [d1, d2]
        .into_iter()
        .map(|mut d| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 512 * 1024];
                for _ in 0..20 {
                    d.read(0, &mut buf).unwrap();
                }
                buf
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), content);
    }
    // The connection object went away first, yet VDDK saw both disks closed before the
    // disconnect.
    let disconnects: Vec<_> = lab
        .stats_lines()
        .into_iter()
        .filter(|v| v["event"] == "disconnect" && v["vmx_spec"] == "moref=vm-threads")
        .collect();
    assert_eq!(disconnects.len(), 1);
    assert_eq!(disconnects[0]["open_disks"], 0);
}

#[test]
fn missing_disk_and_bad_paths_give_vix_errors() {
    let (_, _) = lab();
    let conn = connect(true);
    let err = conn
        .open("[ds1] nope/nope.vmdk", OpenFlags::READ_ONLY)
        .unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FILE_NOT_FOUND));
    let err = conn
        .open("[ds9] a/a.vmdk", OpenFlags::READ_ONLY)
        .unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FILE_NOT_FOUND));
    assert!(matches!(
        conn.open("bad\0path", OpenFlags::READ_ONLY),
        Err(Error::InvalidArgument(_))
    ));
}
