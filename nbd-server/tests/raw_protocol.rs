//! The handshake and transmission byte by byte, for what the real clients never send: refused
//! and malformed options, reads split into data and hole chunks, errors as structured error
//! chunks, and a client breaking the protocol (the server drops it and keeps serving others).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nbd_server::protocol::{self as p, cflag, cmd, errno, info, opt, rep, reply};
use nbd_server::{BlockDevice, Export, Extent, ListenAddress, Server};

const CHUNK: u64 = 64 * 1024;

/// 4 chunks: data, hole, hole, data (each chunk's bytes = its index + 1).
struct Disk;

impl BlockDevice for Disk {
    fn size(&self) -> u64 {
        4 * CHUNK
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            let c = (offset + i as u64) / CHUNK;
            *b = if c == 1 || c == 2 { 0 } else { c as u8 + 1 };
        }
        Ok(())
    }
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let mut out: Vec<Extent> = Vec::new();
        let (mut pos, end) = (offset, offset + len);
        while pos < end {
            let c = pos / CHUNK;
            let l = ((c + 1) * CHUNK).min(end) - pos;
            let hole = c == 1 || c == 2;
            match out.last_mut() {
                Some(e) if e.hole == hole => e.len += l,
                _ => out.push(Extent { len: l, hole }),
            }
            pos += l;
        }
        Ok(out)
    }
}

fn start() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let s = sock.clone();
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(&ListenAddress::Unix(s)).unwrap();
            ready_tx.send(()).unwrap();
            let export = Export {
                name: "d".into(),
                description: String::new(),
                preferred_block_size: CHUNK as u32,
            };
            server
                .run(Arc::new(Disk), export, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
    });
    ready_rx.recv().unwrap();
    (dir, sock, tx, t)
}

struct Client(UnixStream);

impl Client {
    fn connect(sock: &std::path::Path) -> Client {
        let mut s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], &p::NBD_MAGIC.to_be_bytes());
        assert_eq!(&hello[8..16], &p::IHAVEOPT.to_be_bytes());
        assert_eq!(
            u16::from_be_bytes([hello[16], hello[17]]),
            p::FLAG_FIXED_NEWSTYLE | p::FLAG_NO_ZEROES
        );
        s.write_all(&(p::CLIENT_FIXED_NEWSTYLE | p::CLIENT_NO_ZEROES).to_be_bytes())
            .unwrap();
        Client(s)
    }
    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        self.0.read_exact(&mut b).unwrap();
        u16::from_be_bytes(b)
    }
    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.read_exact(&mut b).unwrap();
        u32::from_be_bytes(b)
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.read_exact(&mut b).unwrap();
        u64::from_be_bytes(b)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.0.read_exact(&mut b).unwrap();
        b
    }
    fn option(&mut self, code: u32, data: &[u8]) {
        let mut b = p::IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.0.write_all(&b).unwrap();
    }
    /// One option reply: (type, payload).
    fn reply(&mut self, code: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.u64(), p::OPTION_REPLY_MAGIC);
        assert_eq!(self.u32(), code);
        let kind = self.u32();
        let len = self.u32() as usize;
        (kind, self.bytes(len))
    }
    fn request(&mut self, command: u16, flags: u16, cookie: u64, offset: u64, length: u32) {
        let h = p::RequestHeader {
            flags,
            command,
            cookie,
            offset,
            length,
        };
        self.0.write_all(&h.encode()).unwrap();
    }
    /// One structured chunk: (flags, type, payload).
    fn chunk(&mut self, cookie: u64) -> (u16, u16, Vec<u8>) {
        assert_eq!(self.u32(), p::STRUCTURED_REPLY_MAGIC);
        let flags = self.u16();
        let kind = self.u16();
        assert_eq!(self.u64(), cookie);
        let len = self.u32() as usize;
        (flags, kind, self.bytes(len))
    }
}

fn name_and_infos(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend_from_slice(&i.to_be_bytes());
    }
    d
}

#[test]
fn negotiation_refusals_and_structured_transmission() {
    let (_dir, sock, stop, thread) = start();
    let mut c = Client::connect(&sock);
    c.option(opt::STARTTLS, &[]);
    assert_eq!(c.reply(opt::STARTTLS).0, rep::ERR_POLICY);
    c.option(99, b"whatever");
    assert_eq!(c.reply(99).0, rep::ERR_UNSUP);
    c.option(opt::INFO, &name_and_infos("nope", &[]));
    assert_eq!(c.reply(opt::INFO).0, rep::ERR_UNKNOWN);
    c.option(opt::GO, &[0, 0, 0, 9, b'x']);
    assert_eq!(
        c.reply(opt::GO).0,
        rep::ERR_INVALID,
        "a name longer than the payload"
    );
    let mut meta = 0u32.to_be_bytes().to_vec();
    meta.extend_from_slice(&1u32.to_be_bytes());
    meta.extend_from_slice(&(p::BASE_ALLOCATION.len() as u32).to_be_bytes());
    meta.extend_from_slice(p::BASE_ALLOCATION.as_bytes());
    c.option(opt::SET_META_CONTEXT, &meta);
    assert_eq!(
        c.reply(opt::SET_META_CONTEXT).0,
        rep::ERR_INVALID,
        "needs structured replies first"
    );
    c.option(opt::STRUCTURED_REPLY, &[]);
    assert_eq!(c.reply(opt::STRUCTURED_REPLY).0, rep::ACK);
    c.option(opt::SET_META_CONTEXT, &meta);
    let (kind, payload) = c.reply(opt::SET_META_CONTEXT);
    assert_eq!(kind, rep::META_CONTEXT);
    assert_eq!(&payload[..4], &p::BASE_ALLOCATION_ID.to_be_bytes());
    assert_eq!(c.reply(opt::SET_META_CONTEXT).0, rep::ACK);
    // NBD_OPT_INFO then NBD_OPT_GO on the default export.
    for code in [opt::INFO, opt::GO] {
        c.option(code, &name_and_infos("", &[info::BLOCK_SIZE]));
        let (kind, export) = c.reply(code);
        assert_eq!(kind, rep::INFO);
        assert_eq!(&export[..2], &info::EXPORT.to_be_bytes());
        assert_eq!(&export[2..10], &(4 * CHUNK).to_be_bytes());
        let flags = u16::from_be_bytes([export[10], export[11]]);
        assert!(flags & p::tflag::READ_ONLY != 0);
        let (kind, bs) = c.reply(code);
        assert_eq!(kind, rep::INFO);
        assert_eq!(&bs[..2], &info::BLOCK_SIZE.to_be_bytes());
        assert_eq!(c.reply(code).0, rep::ACK);
    }

    // A read over data, two hole chunks and data comes as DATA, HOLE, DATA chunks.
    c.request(cmd::READ, 0, 7, CHUNK - 10, (2 * CHUNK + 20) as u32);
    let (f, k, d) = c.chunk(7);
    assert_eq!((f, k), (0, reply::OFFSET_DATA));
    assert_eq!(&d[..8], &(CHUNK - 10).to_be_bytes());
    assert_eq!(&d[8..], &[1u8; 10]);
    let (f, k, d) = c.chunk(7);
    assert_eq!((f, k), (0, reply::OFFSET_HOLE));
    assert_eq!(&d[..8], &CHUNK.to_be_bytes());
    assert_eq!(&d[8..12], &(2 * CHUNK as u32).to_be_bytes());
    let (f, k, d) = c.chunk(7);
    assert_eq!((f, k), (reply::FLAG_DONE, reply::OFFSET_DATA));
    assert_eq!(&d[8..], &[4u8; 10]);
    // DF: one piece, holes as zeros.
    c.request(cmd::READ, cflag::DF, 8, CHUNK - 1, 2);
    let (f, k, d) = c.chunk(8);
    assert_eq!(
        (f, k, &d[8..]),
        (reply::FLAG_DONE, reply::OFFSET_DATA, &[1u8, 0][..])
    );
    // Block status.
    c.request(cmd::BLOCK_STATUS, 0, 9, 0, (4 * CHUNK) as u32);
    let (f, k, d) = c.chunk(9);
    assert_eq!((f, k), (reply::FLAG_DONE, reply::BLOCK_STATUS));
    let desc: Vec<(u32, u32)> = d[4..]
        .chunks(8)
        .map(|x| {
            (
                u32::from_be_bytes(x[..4].try_into().unwrap()),
                u32::from_be_bytes(x[4..].try_into().unwrap()),
            )
        })
        .collect();
    let c64 = CHUNK as u32;
    assert_eq!(desc, vec![(c64, 0), (2 * c64, 3), (c64, 0)]);
    // Errors: past the end, and a write to a read-only export.
    c.request(cmd::READ, 0, 10, 4 * CHUNK - 1, 2);
    let (f, k, d) = c.chunk(10);
    assert_eq!((f, k), (reply::FLAG_DONE, reply::ERROR));
    assert_eq!(&d[..4], &errno::EINVAL.to_be_bytes());
    c.request(cmd::WRITE, 0, 11, 0, 3);
    c.0.write_all(b"abc").unwrap();
    let (_, k, d) = c.chunk(11);
    assert_eq!(k, reply::ERROR);
    assert_eq!(&d[..4], &errno::EPERM.to_be_bytes());
    // A broken request: the server drops this client...
    c.0.write_all(&[0xde; 28]).unwrap();
    let mut rest = Vec::new();
    let n = c.0.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "connection closed");
    // ...and keeps serving the next one.
    let mut c2 = Client::connect(&sock);
    c2.option(opt::GO, &name_and_infos("d", &[]));
    while c2.reply(opt::GO).0 != rep::ACK {}
    c2.request(cmd::READ, 0, 1, 3 * CHUNK, 4);
    let mut simple = [0u8; 16];
    c2.0.read_exact(&mut simple).unwrap();
    assert_eq!(&simple[..4], &p::SIMPLE_REPLY_MAGIC.to_be_bytes());
    assert_eq!(&simple[4..8], &0u32.to_be_bytes());
    assert_eq!(c2.bytes(4), vec![4u8; 4]);
    c2.request(cmd::DISC, 0, 2, 0, 0);
    drop(c2);
    stop.send(()).unwrap();
    thread.join().unwrap();
}
