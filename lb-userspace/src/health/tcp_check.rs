//! keepalived TCP_CHECK: up when a TCP connection opens within connect_timeout.

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use tokio::net::{TcpSocket, TcpStream};

use super::CheckResult;

#[derive(Debug, Clone)]
pub struct TcpCheck {
    pub target: SocketAddr,
    /// Source address (keepalived bindto).
    pub bindto: Option<IpAddr>,
    pub connect_timeout: Duration,
}

impl TcpCheck {
    pub async fn check(&self) -> CheckResult {
        match connect(self.target, self.bindto, self.connect_timeout).await {
            Ok(_) => CheckResult::Success { weight: None },
            Err(reason) => CheckResult::Failure(reason),
        }
    }
}

/// Opens a connection, or says why not ("connection refused", "timeout
/// after 3s", ...). Shared with HTTP_GET.
pub async fn connect(
    target: SocketAddr,
    bindto: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let attempt = async {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        if let Some(src) = bindto {
            socket.bind(SocketAddr::new(src, 0))?;
        }
        socket.connect(target).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(format!("connect to {target}: timeout after {timeout:?}")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("connect to {target}: connection refused"))
        }
        Ok(Err(e)) => Err(format!("connect to {target}: {e}")),
        Ok(Ok(stream)) => Ok(stream),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn check(port: u16, timeout: Duration) -> TcpCheck {
        TcpCheck {
            target: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            bindto: None,
            connect_timeout: timeout,
        }
    }

    #[tokio::test]
    async fn listening_port_is_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            check(port, Duration::from_secs(3)).check().await,
            CheckResult::Success { weight: None }
        );
    }

    #[tokio::test]
    async fn refused_port_is_down_with_the_reason() {
        // Bind then drop: the port is free and refuses.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        match check(port, Duration::from_secs(3)).check().await {
            CheckResult::Failure(reason) => assert!(reason.contains("refused"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bindto_sets_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let src: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
        let (accepted, checked) = tokio::join!(
            listener.accept(),
            connect(target, Some(src), Duration::from_secs(3))
        );
        checked.unwrap();
        assert_eq!(accepted.unwrap().1.ip(), src);
    }
}
