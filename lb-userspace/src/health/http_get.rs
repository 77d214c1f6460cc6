//! keepalived HTTP_GET: every url must answer with its status_code and/or
//! the MD5 digest of its body, within connect_timeout (connect + exchange).

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use md5::{Digest as _, Md5};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{CheckResult, tcp_check::connect};

/// Bodies larger than this are cut (keepalived reads a bounded buffer too);
/// the digest is then computed on what was read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
const HEADER_END: &[u8] = b"\r\n\r\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlCheck {
    pub path: String,
    pub status_code: Option<u16>,
    /// Lower-case hex MD5 of the body.
    pub digest: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpGet {
    pub target: SocketAddr,
    pub bindto: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub urls: Vec<UrlCheck>,
}

impl HttpGet {
    pub async fn check(&self) -> CheckResult {
        for url in &self.urls {
            if let Err(reason) = self.check_url(url).await {
                return CheckResult::Failure(reason);
            }
        }
        CheckResult::Success { weight: None }
    }

    async fn check_url(&self, url: &UrlCheck) -> Result<(), String> {
        let exchange = async {
            let mut stream = connect(self.target, self.bindto, self.connect_timeout).await?;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lb-userspace\r\nConnection: close\r\n\r\n",
                url.path, self.target
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("GET {}: {e}", url.path))?;
            let mut response = Vec::new();
            (&mut stream)
                .take(MAX_RESPONSE_BYTES as u64)
                .read_to_end(&mut response)
                .await
                .map_err(|e| format!("GET {}: {e}", url.path))?;
            Ok::<_, String>(response)
        };
        let response = tokio::time::timeout(self.connect_timeout, exchange)
            .await
            .map_err(|_| format!("GET {}: timeout after {:?}", url.path, self.connect_timeout))??;
        let (status, body) = parse_response(&response)
            .ok_or_else(|| format!("GET {}: malformed HTTP response", url.path))?;
        if let Some(expected) = url.status_code
            && status != expected
        {
            return Err(format!(
                "GET {}: status {status} (expected {expected})",
                url.path
            ));
        }
        if let Some(expected) = &url.digest {
            let got = hex(&Md5::digest(&body));
            if !got.eq_ignore_ascii_case(expected) {
                return Err(format!(
                    "GET {}: digest mismatch ({got}, expected {expected})",
                    url.path
                ));
            }
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Status code and body (de-chunked when Transfer-Encoding is chunked).
pub fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let header_len = raw
        .windows(HEADER_END.len())
        .position(|w| w == HEADER_END)?;
    let head = std::str::from_utf8(&raw[..header_len]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut chunked = false;
    let mut content_length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<usize>().ok();
        }
    }
    let rest = &raw[header_len + HEADER_END.len()..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match content_length {
            Some(n) => rest[..n.min(rest.len())].to_vec(),
            None => rest.to_vec(),
        }
    };
    Some((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::net::TcpListener;

    /// A one-shot HTTP server on loopback answering `response` to each
    /// connection (or never answering when `hang`).
    async fn server(response: &'static [u8], hang: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    if hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let _ = s.write_all(response).await;
                });
            }
        });
        addr
    }

    fn checker(target: SocketAddr, status: Option<u16>, digest: Option<&str>) -> HttpGet {
        HttpGet {
            target,
            bindto: None,
            connect_timeout: Duration::from_secs(2),
            urls: vec![UrlCheck {
                path: "/health".into(),
                status_code: status,
                digest: digest.map(str::to_string),
            }],
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    /// md5("hello")
    const HELLO_MD5: &str = "5d41402abc4b2a76b9719d911017c592";

    #[tokio::test]
    async fn status_200_is_up() {
        let addr = server(OK, false).await;
        assert_eq!(
            checker(addr, Some(200), None).check().await,
            CheckResult::Success { weight: None }
        );
    }

    #[tokio::test]
    async fn status_500_is_down_with_the_status() {
        let addr = server(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .await;
        match checker(addr, Some(200), None).check().await {
            CheckResult::Failure(r) => assert!(r.contains("status 500 (expected 200)"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn digest_is_checked() {
        let addr = server(OK, false).await;
        assert_eq!(
            checker(addr, None, Some(HELLO_MD5)).check().await,
            CheckResult::Success { weight: None }
        );
        match checker(addr, None, Some("00000000000000000000000000000000"))
            .check()
            .await
        {
            CheckResult::Failure(r) => assert!(r.contains("digest mismatch"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_then_hang_times_out() {
        let addr = server(OK, true).await;
        match checker(addr, Some(200), None).check().await {
            CheckResult::Failure(r) => assert!(r.contains("timeout"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw), Some((200, b"hello".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        let _ = Ipv4Addr::LOCALHOST;
    }
}
