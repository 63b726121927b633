//! Harness for the NBD server's decoders: what a client sends before and after the handshake.

use nbd_server::protocol::{parse_option, ClientOption, RequestHeader};

/// `nbd_request`: mode byte 0 decodes a 28-byte request header (which must re-encode to the
/// same bytes when accepted); any other mode byte `m` decodes the rest as the payload of
/// option `m % 12`, which must return `Ok` or `Err`, never panic, and never report more
/// info requests or queries than the payload could hold.
pub fn nbd_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        if let Ok(bytes) = <&[u8; RequestHeader::LEN]>::try_from(rest) {
            if let Ok(h) = RequestHeader::decode(bytes) {
                assert_eq!(&h.encode(), bytes, "request header round trip");
            }
        }
        return;
    }
    match parse_option(u32::from(mode % 12), rest) {
        Ok(ClientOption::Info { name, requests, .. }) => {
            assert!(4 + name.len() + 2 + 2 * requests.len() == rest.len());
        }
        Ok(ClientOption::MetaContext { name, queries, .. }) => {
            let total: usize = queries.iter().map(|q| 4 + q.len()).sum();
            assert!(4 + name.len() + 4 + total == rest.len());
        }
        Ok(_) | Err(_) => {}
    }
}
