//! The NBD wire format: magic numbers, codes, and pure decoders of what a client sends (option
//! payloads and request headers) and encoders of what the server answers. Nothing here does I/O,
//! so the decoders are fuzzed directly (`fuzz/fuzz_targets/nbd_request.rs`).
//!
//! Reference: the NBD protocol document (`doc/proto.md` of the NBD project), fixed newstyle
//! negotiation with structured replies.

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation, and the magic of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of an option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: no zeroes.
pub const CLIENT_NO_ZEROES: u32 = 2;

/// Option codes.
pub mod opt {
    /// `NBD_OPT_EXPORT_NAME`
    pub const EXPORT_NAME: u32 = 1;
    /// `NBD_OPT_ABORT`
    pub const ABORT: u32 = 2;
    /// `NBD_OPT_LIST`
    pub const LIST: u32 = 3;
    /// `NBD_OPT_STARTTLS`
    pub const STARTTLS: u32 = 5;
    /// `NBD_OPT_INFO`
    pub const INFO: u32 = 6;
    /// `NBD_OPT_GO`
    pub const GO: u32 = 7;
    /// `NBD_OPT_STRUCTURED_REPLY`
    pub const STRUCTURED_REPLY: u32 = 8;
    /// `NBD_OPT_LIST_META_CONTEXT`
    pub const LIST_META_CONTEXT: u32 = 9;
    /// `NBD_OPT_SET_META_CONTEXT`
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types.
pub mod rep {
    /// `NBD_REP_ACK`
    pub const ACK: u32 = 1;
    /// `NBD_REP_SERVER`
    pub const SERVER: u32 = 2;
    /// `NBD_REP_INFO`
    pub const INFO: u32 = 3;
    /// `NBD_REP_META_CONTEXT`
    pub const META_CONTEXT: u32 = 4;
    /// `NBD_REP_ERR_UNSUP`
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    /// `NBD_REP_ERR_POLICY`
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    /// `NBD_REP_ERR_INVALID`
    pub const ERR_INVALID: u32 = (1 << 31) + 3;
    /// `NBD_REP_ERR_UNKNOWN`
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
    /// `NBD_REP_ERR_TOO_BIG`
    pub const ERR_TOO_BIG: u32 = (1 << 31) + 9;
}

/// `NBD_INFO_*` types.
pub mod info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// `NBD_INFO_NAME`
    pub const NAME: u16 = 1;
    /// `NBD_INFO_DESCRIPTION`
    pub const DESCRIPTION: u16 = 2;
    /// `NBD_INFO_BLOCK_SIZE`
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags.
pub mod tflag {
    /// `NBD_FLAG_HAS_FLAGS`
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// `NBD_FLAG_READ_ONLY`
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_FLAG_SEND_FLUSH`
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_FLAG_SEND_FUA`
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_FLAG_SEND_TRIM`
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_FLAG_SEND_WRITE_ZEROES`
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_FLAG_SEND_DF`
    pub const SEND_DF: u16 = 1 << 7;
    /// `NBD_FLAG_CAN_MULTI_CONN`
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
}

/// Command types.
pub mod cmd {
    /// `NBD_CMD_READ`
    pub const READ: u16 = 0;
    /// `NBD_CMD_WRITE`
    pub const WRITE: u16 = 1;
    /// `NBD_CMD_DISC`
    pub const DISC: u16 = 2;
    /// `NBD_CMD_FLUSH`
    pub const FLUSH: u16 = 3;
    /// `NBD_CMD_TRIM`
    pub const TRIM: u16 = 4;
    /// `NBD_CMD_WRITE_ZEROES`
    pub const WRITE_ZEROES: u16 = 6;
    /// `NBD_CMD_BLOCK_STATUS`
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags.
pub mod cflag {
    /// `NBD_CMD_FLAG_FUA`
    pub const FUA: u16 = 1 << 0;
    /// `NBD_CMD_FLAG_NO_HOLE`
    pub const NO_HOLE: u16 = 1 << 1;
    /// `NBD_CMD_FLAG_DF`
    pub const DF: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_REQ_ONE`
    pub const REQ_ONE: u16 = 1 << 3;
}

/// Structured reply chunk types and flags.
pub mod reply {
    /// `NBD_REPLY_FLAG_DONE`
    pub const FLAG_DONE: u16 = 1;
    /// `NBD_REPLY_TYPE_NONE`
    pub const NONE: u16 = 0;
    /// `NBD_REPLY_TYPE_OFFSET_DATA`
    pub const OFFSET_DATA: u16 = 1;
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`
    pub const OFFSET_HOLE: u16 = 2;
    /// `NBD_REPLY_TYPE_BLOCK_STATUS`
    pub const BLOCK_STATUS: u16 = 5;
    /// `NBD_REPLY_TYPE_ERROR`
    pub const ERROR: u16 = (1 << 15) + 1;
}

/// `base:allocation` states.
pub mod state {
    /// `NBD_STATE_HOLE`: not allocated.
    pub const HOLE: u32 = 1;
    /// `NBD_STATE_ZERO`: reads as zeros.
    pub const ZERO: u32 = 2;
}

/// Error values on the wire (the protocol fixes them; they equal Linux errno values).
pub mod errno {
    /// `EPERM`
    pub const EPERM: u32 = 1;
    /// `EIO`
    pub const EIO: u32 = 5;
    /// `ENOMEM`
    pub const ENOMEM: u32 = 12;
    /// `EINVAL`
    pub const EINVAL: u32 = 22;
    /// `ENOSPC`
    pub const ENOSPC: u32 = 28;
    /// `EOVERFLOW`
    pub const EOVERFLOW: u32 = 75;
    /// `ENOTSUP`
    pub const ENOTSUP: u32 = 95;
    /// `ESHUTDOWN`
    pub const ESHUTDOWN: u32 = 108;
}

/// The one metadata context served.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id the server gives `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// Longest option payload accepted; a longer one is answered with `NBD_REP_ERR_TOO_BIG`.
pub const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Longest read or write payload (the NBD document's recommended maximum).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;

/// A client option payload that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed option {option}: {reason}")]
pub struct OptionError {
    /// The option code.
    pub option: u32,
    /// What is wrong.
    pub reason: &'static str,
}

/// A decoded client option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME` (old way to pick an export; no error possible).
    ExportName(String),
    /// `NBD_OPT_ABORT`
    Abort,
    /// `NBD_OPT_LIST`
    List,
    /// `NBD_OPT_STARTTLS` (refused: the server speaks plain NBD on loopback or a socket).
    StartTls,
    /// `NBD_OPT_INFO` (`go == false`) or `NBD_OPT_GO`.
    Info {
        /// `NBD_OPT_GO` rather than `NBD_OPT_INFO`.
        go: bool,
        /// Export name.
        name: String,
        /// `NBD_INFO_*` items asked for.
        requests: Vec<u16>,
    },
    /// `NBD_OPT_STRUCTURED_REPLY`
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT` (`set == false`) or `NBD_OPT_SET_META_CONTEXT`.
    MetaContext {
        /// Set rather than list.
        set: bool,
        /// Export name.
        name: String,
        /// Context queries.
        queries: Vec<String>,
    },
    /// Any other option code.
    Unknown(u32),
}

/// A cursor over an option payload that fails instead of panicking on short input.
struct Cursor<'a> {
    data: &'a [u8],
    option: u32,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: &'static str) -> OptionError {
        OptionError {
            option: self.option,
            reason,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], OptionError> {
        if self.data.len() < n {
            return Err(self.err("payload shorter than its fields say"));
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, OptionError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, OptionError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, len: u32) -> Result<String, OptionError> {
        // A length larger than the payload fails in `take` before anything is allocated.
        let b = self.take(usize::try_from(len).map_err(|_| self.err("length too large"))?)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("a name is not UTF-8"))
    }
    fn end(&self) -> Result<(), OptionError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

/// Decodes an option's payload.
///
/// # Errors
/// When the payload does not match the option's layout (the server answers
/// `NBD_REP_ERR_INVALID`).
pub fn parse_option(option: u32, data: &[u8]) -> Result<ClientOption, OptionError> {
    let mut c = Cursor { data, option };
    let parsed = match option {
        opt::EXPORT_NAME => {
            let name = c.string(data.len() as u32)?;
            ClientOption::ExportName(name)
        }
        opt::ABORT => ClientOption::Abort,
        opt::LIST | opt::STRUCTURED_REPLY | opt::STARTTLS => {
            c.end()?;
            match option {
                opt::LIST => ClientOption::List,
                opt::STARTTLS => ClientOption::StartTls,
                _ => ClientOption::StructuredReply,
            }
        }
        opt::INFO | opt::GO => {
            let len = c.u32()?;
            let name = c.string(len)?;
            let n = c.u16()?;
            let mut requests = Vec::with_capacity(usize::from(n).min(c.data.len() / 2));
            for _ in 0..n {
                requests.push(c.u16()?);
            }
            c.end()?;
            ClientOption::Info {
                go: option == opt::GO,
                name,
                requests,
            }
        }
        opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
            let len = c.u32()?;
            let name = c.string(len)?;
            let n = c.u32()?;
            let mut queries = Vec::new();
            for _ in 0..n {
                let l = c.u32()?;
                queries.push(c.string(l)?);
            }
            c.end()?;
            ClientOption::MetaContext {
                set: option == opt::SET_META_CONTEXT,
                name,
                queries,
            }
        }
        other => ClientOption::Unknown(other),
    };
    Ok(parsed)
}

/// The fixed 28-byte header of a transmission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub command: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Length (of the payload for writes).
    pub length: u32,
}

/// A request header with the wrong magic: the stream is out of step, the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad request magic {0:#010x}")]
pub struct BadMagic(pub u32);

impl RequestHeader {
    /// Size on the wire.
    pub const LEN: usize = 28;

    /// Decodes a header.
    ///
    /// # Errors
    /// [`BadMagic`] when the magic is not the request magic.
    pub fn decode(b: &[u8; Self::LEN]) -> Result<Self, BadMagic> {
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != REQUEST_MAGIC {
            return Err(BadMagic(magic));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(a)
        };
        Ok(RequestHeader {
            flags: u16::from_be_bytes([b[4], b[5]]),
            command: u16::from_be_bytes([b[6], b[7]]),
            cookie: u64_at(8),
            offset: u64_at(16),
            length: u32::from_be_bytes([b[24], b[25], b[26], b[27]]),
        })
    }

    /// Encodes a header (clients and tests).
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.command.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// An option reply: header and payload.
pub fn option_reply(option: u32, kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + payload.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A simple reply header (the data of a successful read follows it).
pub fn simple_reply(cookie: u64, error: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk header; `len` bytes of payload follow it.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, len: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

/// A structured error chunk (final) with a human-readable message.
pub fn error_chunk(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    // The message length is a u16 and the spec asks for at most 4096 bytes.
    let mut m = message.as_bytes();
    if m.len() > 4096 {
        let mut cut = 4096;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        m = &m[..cut];
    }
    let mut b = chunk_header(cookie, reply::FLAG_DONE, reply::ERROR, 6 + m.len() as u32);
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(m.len() as u16).to_be_bytes());
    b.extend_from_slice(m);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_option_round_trip() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"abc");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        d.extend_from_slice(&info::NAME.to_be_bytes());
        assert_eq!(
            parse_option(opt::GO, &d),
            Ok(ClientOption::Info {
                go: true,
                name: "abc".into(),
                requests: vec![info::BLOCK_SIZE, info::NAME]
            })
        );
        // One byte short, one byte long: both refused, neither panics.
        assert!(parse_option(opt::GO, &d[..d.len() - 1]).is_err());
        d.push(0);
        assert!(parse_option(opt::GO, &d).is_err());
    }

    #[test]
    fn meta_context_lengths_are_checked() {
        let mut d = Vec::new();
        d.extend_from_slice(&0u32.to_be_bytes());
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_option(opt::SET_META_CONTEXT, &d).is_err());
        let mut ok = Vec::new();
        ok.extend_from_slice(&0u32.to_be_bytes());
        ok.extend_from_slice(&1u32.to_be_bytes());
        ok.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
        ok.extend_from_slice(BASE_ALLOCATION.as_bytes());
        assert_eq!(
            parse_option(opt::LIST_META_CONTEXT, &ok),
            Ok(ClientOption::MetaContext {
                set: false,
                name: String::new(),
                queries: vec![BASE_ALLOCATION.into()]
            })
        );
    }

    #[test]
    fn request_header_round_trip_and_bad_magic() {
        let h = RequestHeader {
            flags: cflag::FUA,
            command: cmd::WRITE,
            cookie: 0xdead_beef_0102_0304,
            offset: 1 << 40,
            length: 4096,
        };
        assert_eq!(RequestHeader::decode(&h.encode()), Ok(h));
        let mut b = h.encode();
        b[0] ^= 1;
        assert!(RequestHeader::decode(&b).is_err());
    }
}
