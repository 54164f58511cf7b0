//! Readiness probes: the wrapper reports `READY=1` / `SERVICE_RUNNING` only once PROGRAM answers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where PROGRAM must answer before it counts as ready.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    /// A TCP connection to HOST:PORT succeeds.
    Tcp(String),
    /// `GET` answers with a 2xx or 3xx status.
    Http {
        /// HOST:PORT to connect to.
        address: String,
        /// The `Host` header.
        host: String,
        /// The request target.
        path: String,
    },
}

impl Probe {
    /// The probe for `--ready-tcp` or `--ready-http`, checked now so that a typo is an error at
    /// start, not a service that never becomes ready.
    pub(crate) fn from_options(
        tcp: Option<&str>,
        http: Option<&str>,
    ) -> Result<Option<Probe>, String> {
        if let Some(tcp) = tcp {
            return match tcp.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(Some(Probe::Tcp(tcp.to_owned())))
                }
                _ => Err(format!(
                    "--ready-tcp `{tcp}` is not HOST:PORT (for example 127.0.0.1:8080)"
                )),
            };
        }
        let Some(url) = http else { return Ok(None) };
        let bad = |why: &str| {
            format!("--ready-http `{url}` {why} (for example http://127.0.0.1:8080/healthz)")
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("must start with http:// (https is not probed)"));
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Some(Probe::Http {
            address: format!("{}:{port}", authority.host()),
            host: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        }))
    }

    /// What the probe waits for, for status lines.
    pub(crate) fn describe(&self) -> String {
        match self {
            Probe::Tcp(address) => format!("a TCP connection to {address}"),
            Probe::Http { host, path, .. } => format!("GET http://{host}{path} to answer 2xx/3xx"),
        }
    }

    /// One attempt: `Ok` when PROGRAM answered as required.
    ///
    /// # Cancellation safety
    /// Cancel-safe: an abandoned attempt only drops its connection.
    pub(crate) async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }

    async fn attempt(&self) -> Result<(), String> {
        match self {
            Probe::Tcp(address) => TcpStream::connect(address)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            // Hand-written: a probe needs the status line of one GET over plain HTTP/1.1, which
            // does not justify an HTTP client (and its TLS stack) in a wrapper meant to be small.
            Probe::Http {
                address,
                host,
                path,
            } => {
                let mut stream = TcpStream::connect(address)
                    .await
                    .map_err(|e| e.to_string())?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: winddown-ready\r\nConnection: close\r\n\r\n"
                );
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut head = Vec::with_capacity(64);
                let mut buf = [0u8; 256];
                while !head.contains(&b'\n') && head.len() < 4096 {
                    let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&head);
                let status = line
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next()))?;
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("answered {status}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_checked_at_start() {
        assert!(
            Probe::from_options(Some("localhost"), None)
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(
            Probe::from_options(None, Some("https://x/"))
                .unwrap_err()
                .contains("http://")
        );
        let Some(Probe::Http { address, path, .. }) =
            Probe::from_options(None, Some("http://127.0.0.1:81/healthz?x=1")).unwrap()
        else {
            panic!("not http")
        };
        assert_eq!(
            (address.as_str(), path.as_str()),
            ("127.0.0.1:81", "/healthz?x=1")
        );
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe::from_options(None, Some(&format!("http://127.0.0.1:{port}/h")))
            .unwrap()
            .unwrap();
        let server = tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 503 Unavailable\r\n\r\n",
                "HTTP/1.1 200 OK\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(probe.check().await.unwrap_err(), "answered 503");
        probe.check().await.unwrap();
        server.await.unwrap();
    }
}
