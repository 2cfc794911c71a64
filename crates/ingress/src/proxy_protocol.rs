//! PROXY protocol version 2 (HAProxy's `proxy-protocol.txt`, section 2.2): the binary
//! header the ingress writes at the start of each connection to a replica of a service
//! with `"proxy_protocol": true`, so the application learns the client's address that
//! an L4 proxy otherwise hides. The parser is the receiving side: `mycluster hello
//! --proxy-protocol` and the tests read the header with it.
//!
//! Layout: the 12-byte signature, one byte of version (high nibble, 2) and command (low
//! nibble: 0 LOCAL, 1 PROXY), one byte of address family (high nibble: 0 UNSPEC, 1 INET,
//! 2 INET6, 3 UNIX) and transport (low nibble: 1 STREAM), the length of what follows
//! (16 bits, network order), then the addresses — for INET source address, destination
//! address, source port, destination port (12 bytes); for INET6 the same with 16-byte
//! addresses (36 bytes) — and optional TLVs, which a receiver skips.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The header's first 12 bytes: `\r\n\r\n\0\r\nQUIT\n`.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part: signature, version and command, family and transport, length.
pub const FIXED_LEN: usize = 16;

/// Version 2, command PROXY (LOCAL, 0x20, is a proxy's own connection: a health check).
const V2_PROXY: u8 = 0x21;
/// TCP over IPv4, TCP over IPv6.
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
/// Bytes of the addresses after the fixed part, for each family.
const INET_LEN: usize = 12;
const INET6_LEN: usize = 36;

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection: the client (`source`) and the address it connected to
    /// (`destination`), as the proxy saw them.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection, or addresses the receiver cannot use (UNSPEC, UNIX,
    /// UDP): the connection's own endpoints are the ones to trust.
    Local,
}

impl Header {
    /// The client's address, for a relayed connection.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Header::Proxy { source, .. } => Some(*source),
            Header::Local => None,
        }
    }
}

/// Why bytes are not a PROXY protocol v2 header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol v2 signature: the peer did not start with one (is the service's proxy_protocol on, and does it reach this port through the ingress?)")]
    Signature,
    #[error("PROXY protocol version {0} is not supported: only version 2")]
    Version(u8),
    #[error("unknown PROXY protocol command {0}")]
    Command(u8),
    #[error("the PROXY protocol header says {said} bytes of addresses, too few for its family (need {need})")]
    Short { said: usize, need: usize },
    #[error("cannot read the PROXY protocol header: {0}")]
    Read(#[from] std::io::Error),
}

/// The header for a connection from `client` that arrived at `local` (the ingress's
/// socket). Addresses of two families (a client over IPv4 on a dual-stack socket) are
/// both written as IPv6, IPv4-mapped; an IPv4-mapped IPv6 pair as plain IPv4.
pub fn encode(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = (unmapped(client), unmapped(local));
    let mut header = Vec::with_capacity(FIXED_LEN + INET6_LEN);
    header.extend_from_slice(&SIGNATURE);
    header.push(V2_PROXY);
    match (client.ip(), local.ip()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            header.push(TCP4);
            header.extend_from_slice(&(INET_LEN as u16).to_be_bytes());
            header.extend_from_slice(&source.octets());
            header.extend_from_slice(&destination.octets());
        }
        (source, destination) => {
            header.push(TCP6);
            header.extend_from_slice(&(INET6_LEN as u16).to_be_bytes());
            header.extend_from_slice(&as_v6(source).octets());
            header.extend_from_slice(&as_v6(destination).octets());
        }
    }
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&local.port().to_be_bytes());
    header
}

/// `::ffff:a.b.c.d` as `a.b.c.d`: what a dual-stack socket reports for an IPv4 peer.
fn unmapped(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The length of the whole header whose fixed part is `fixed`: checks the signature and
/// the version, and reads the length field.
pub fn header_len(fixed: &[u8; FIXED_LEN]) -> Result<usize, HeaderError> {
    if fixed[..12] != SIGNATURE {
        return Err(HeaderError::Signature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(HeaderError::Version(version));
    }
    Ok(FIXED_LEN + usize::from(u16::from_be_bytes([fixed[14], fixed[15]])))
}

/// Parses a whole header (as long as [`header_len`] said), TLVs and all.
pub fn parse(header: &[u8]) -> Result<Header, HeaderError> {
    let fixed: &[u8; FIXED_LEN] = header
        .get(..FIXED_LEN)
        .and_then(|f| f.try_into().ok())
        .ok_or(HeaderError::Short {
            said: header.len(),
            need: FIXED_LEN,
        })?;
    let total = header_len(fixed)?;
    let rest = header.get(FIXED_LEN..total).ok_or(HeaderError::Short {
        said: header.len().saturating_sub(FIXED_LEN),
        need: total - FIXED_LEN,
    })?;
    match fixed[12] & 0x0f {
        0x0 => return Ok(Header::Local),
        0x1 => {}
        other => return Err(HeaderError::Command(other)),
    }
    let need = match fixed[13] {
        TCP4 => INET_LEN,
        TCP6 => INET6_LEN,
        // UNSPEC, UNIX, UDP: nothing a TCP server can use; the spec says to fall back to
        // the connection's own addresses.
        _ => return Ok(Header::Local),
    };
    if rest.len() < need {
        return Err(HeaderError::Short {
            said: rest.len(),
            need,
        });
    }
    let port = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
    let (source, destination) = if need == INET_LEN {
        let ip = |at: usize| {
            IpAddr::V4(Ipv4Addr::new(
                rest[at],
                rest[at + 1],
                rest[at + 2],
                rest[at + 3],
            ))
        };
        (
            SocketAddr::new(ip(0), port(8)),
            SocketAddr::new(ip(4), port(10)),
        )
    } else {
        let ip = |at: usize| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(octets))
        };
        (
            SocketAddr::new(ip(0), port(32)),
            SocketAddr::new(ip(16), port(34)),
        )
    };
    Ok(Header::Proxy {
        source,
        destination,
    })
}

/// Reads one header from the start of `stream`, and not a byte more: what follows is the
/// application's own protocol.
pub async fn read_header<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Header, HeaderError> {
    let mut fixed = [0u8; FIXED_LEN];
    stream.read_exact(&mut fixed).await?;
    let total = header_len(&fixed)?;
    let mut header = vec![0u8; total];
    header[..FIXED_LEN].copy_from_slice(&fixed);
    stream.read_exact(&mut header[FIXED_LEN..]).await?;
    parse(&header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn tcp4_header_byte_by_byte() {
        let header = encode(addr("192.168.1.10:54321"), addr("10.0.0.1:8080"));
        let expected: Vec<u8> = [
            // signature
            &[
                0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
            ][..],
            // version 2, PROXY; TCP over IPv4; 12 bytes follow
            &[0x21, 0x11, 0x00, 0x0c],
            // source 192.168.1.10, destination 10.0.0.1
            &[192, 168, 1, 10, 10, 0, 0, 1],
            // source port 54321 (0xd431), destination port 8080 (0x1f90)
            &[0xd4, 0x31, 0x1f, 0x90],
        ]
        .concat();
        assert_eq!(header, expected);
        assert_eq!(
            parse(&header).expect("parses"),
            Header::Proxy {
                source: addr("192.168.1.10:54321"),
                destination: addr("10.0.0.1:8080"),
            }
        );
    }

    #[test]
    fn tcp6_header_byte_by_byte() {
        let header = encode(addr("[2001:db8::1]:40000"), addr("[2001:db8::2]:443"));
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(&header[..12], &SIGNATURE);
        assert_eq!(&header[12..16], &[0x21, 0x21, 0x00, 0x24]);
        let mut source = [0u8; 16];
        source[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        source[15] = 1;
        assert_eq!(&header[16..32], &source);
        assert_eq!(header[47], 2);
        assert_eq!(&header[48..52], &[0x9c, 0x40, 0x01, 0xbb]);
        assert_eq!(
            parse(&header).expect("parses").source(),
            Some(addr("[2001:db8::1]:40000"))
        );
    }

    #[test]
    fn mixed_and_mapped_families() {
        // A dual-stack listener reports an IPv4 client as ::ffff:a.b.c.d: written as IPv4.
        let header = encode(
            addr("[::ffff:127.0.0.1]:5000"),
            addr("[::ffff:127.0.0.1]:80"),
        );
        assert_eq!(header[13], TCP4);
        assert_eq!(
            parse(&header).expect("parses").source(),
            Some(addr("127.0.0.1:5000"))
        );
        // One side IPv4, the other IPv6: both as IPv6, the IPv4 one mapped.
        let header = encode(addr("127.0.0.1:5000"), addr("[::1]:80"));
        assert_eq!(header[13], TCP6);
        assert_eq!(
            parse(&header).expect("parses").source(),
            Some(addr("[::ffff:127.0.0.1]:5000"))
        );
    }

    #[test]
    fn local_tlvs_and_refusals() {
        // LOCAL, no addresses.
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&local).expect("parses"), Header::Local);
        // UNSPEC family under PROXY: the connection's own addresses count.
        let mut unspec = SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&unspec).expect("parses"), Header::Local);
        // TLVs after the addresses are skipped: the length says how far to read.
        let mut with_tlv = encode(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        with_tlv[15] += 4;
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        assert_eq!(
            parse(&with_tlv).expect("parses").source(),
            Some(addr("1.2.3.4:1"))
        );

        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HeaderError::Signature)
        ));
        let mut v1 = encode(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        v1[12] = 0x11;
        assert!(matches!(parse(&v1), Err(HeaderError::Version(1))));
        let mut short = encode(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        short[15] = 4;
        short.truncate(20);
        assert!(matches!(
            parse(&short),
            Err(HeaderError::Short { said: 4, need: 12 })
        ));
        let truncated = encode(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        assert!(matches!(
            parse(&truncated[..20]),
            Err(HeaderError::Short { .. })
        ));
    }

    #[tokio::test]
    async fn reads_the_header_and_not_a_byte_more() {
        let mut bytes = encode(addr("1.2.3.4:1000"), addr("5.6.7.8:80"));
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut reader = &bytes[..];
        let header = read_header(&mut reader).await.expect("a header");
        assert_eq!(header.source(), Some(addr("1.2.3.4:1000")));
        assert_eq!(reader, b"GET / HTTP/1.1\r\n");
    }
}
