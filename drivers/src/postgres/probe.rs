//! The cleartext-password check before a PostgreSQL connection without TLS.
//!
//! `tokio-postgres` answers `AuthenticationCleartextPassword` by sending the password, and
//! offers no switch against it. So before a connection that may run without TLS
//! (`sslMode` `disable` or `prefer`) carries the password, a short probe opens its own TCP
//! connection, sends the same startup message (user, database) and reads the server's first
//! authentication request; when the server would ask for the password in clear text, the
//! connection is refused unless `allowCleartextPassword` is set. With `prefer` the probe first
//! asks for TLS as the client will: a server that accepts TLS is not probed further (the
//! password then travels inside TLS); the probe completes the TLS handshake and closes it
//! cleanly so the server logs nothing. Every probe ends its connection after reading one whole
//! message, which the server also treats as a silent disconnect.
//!
//! Limit: the probe and the real connection are two TCP connections. It stops a server that
//! is configured for `password` authentication (and anyone passively listening to it) from
//! getting the password; an active man in the middle can answer the two differently; only
//! TLS with `verify-full` stops that.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::DriverError;

/// `AuthenticationCleartextPassword`.
const AUTH_CLEARTEXT: u32 = 3;
/// The SSLRequest code (1234.5679).
const SSL_REQUEST: u32 = 80_877_103;
/// Protocol 3.0.
const PROTOCOL: u32 = 196_608;

/// What to probe and how.
#[derive(Debug, Clone)]
pub(crate) struct CleartextProbe {
    /// Host name or address and port of each server the client may try.
    pub targets: Vec<(String, u16)>,
    pub user: String,
    pub database: Option<String>,
    /// `sslMode prefer`: ask for TLS first, as the client will (with this configuration).
    pub prefer_tls: Option<Arc<rustls::ClientConfig>>,
    pub timeout: Duration,
}

impl CleartextProbe {
    /// Fails when a server would receive the password in clear text; servers the probe
    /// cannot reach are left to the real connection attempt (and its specific error).
    pub(crate) fn check(&self) -> Result<(), DriverError> {
        for (host, port) in &self.targets {
            match self.asks_cleartext(host, *port) {
                Ok(true) => {
                    return Err(DriverError::Open(format!(
                        "postgres {host}:{port}: the server asks for the password in clear text \
                         (`password` authentication) on a connection without TLS; refused so the \
                         password is not sent readable on the network. Use sslMode require or \
                         verify-full, switch the server to scram-sha-256, or set \
                         allowCleartextPassword: true to accept the risk"
                    )));
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(host, port, error = %e, "cleartext probe inconclusive"),
            }
        }
        Ok(())
    }

    fn asks_cleartext(&self, host: &str, port: u16) -> io::Result<bool> {
        let mut stream = self.connect(host, port)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        if let Some(tls) = &self.prefer_tls {
            let mut request = Vec::with_capacity(8);
            request.extend_from_slice(&8u32.to_be_bytes());
            request.extend_from_slice(&SSL_REQUEST.to_be_bytes());
            stream.write_all(&request)?;
            let mut answer = [0u8; 1];
            stream.read_exact(&mut answer)?;
            if answer[0] == b'S' {
                // The client will use TLS: nothing to check. Leave quietly.
                close_tls(tls.clone(), host, stream);
                return Ok(false);
            }
            if answer[0] != b'N' {
                // Anything else: the real client reports it.
                return Ok(false);
            }
        }
        stream.write_all(&startup_message(&self.user, self.database.as_deref()))?;
        let mut header = [0u8; 5];
        stream.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if header[0] != b'R' || len < 8 {
            // An error ('E': no pg_hba line, unknown database...): the real attempt names it.
            return Ok(false);
        }
        let mut code = [0u8; 4];
        stream.read_exact(&mut code)?;
        // Read the rest (e.g. the SASL mechanism list) so closing sends FIN, not RST.
        let rest = u64::from(len.saturating_sub(8)).min(4096);
        io::copy(&mut (&mut stream).take(rest), &mut io::sink())?;
        let _ = stream.shutdown(Shutdown::Both);
        Ok(u32::from_be_bytes(code) == AUTH_CLEARTEXT)
    }

    fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Completes the TLS handshake the server expects after `S` and closes it with
/// `close_notify` (an unanswered `S` is logged by the server as a failed TLS connection).
fn close_tls(config: Arc<rustls::ClientConfig>, host: &str, mut stream: TcpStream) {
    let Ok(name) = ServerName::try_from(host.to_owned()) else { return };
    let Ok(mut conn) = rustls::ClientConnection::new(config, name) else { return };
    while conn.is_handshaking() {
        if conn.complete_io(&mut stream).is_err() {
            return;
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut stream);
    let _ = stream.shutdown(Shutdown::Both);
}

fn startup_message(user: &str, database: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL.to_be_bytes());
    let mut param = |key: &str, value: &str| {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    };
    param("user", user);
    if let Some(db) = database {
        param("database", db);
    }
    param("application_name", "mini-connector-probe");
    body.push(0);
    let mut message = Vec::with_capacity(body.len() + 4);
    message.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
    message.extend_from_slice(&body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A fake server that answers the startup message with authentication request `code`.
    fn fake_server(tls_answer: Option<u8>, code: u32) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut rest = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            s.read_exact(&mut rest).unwrap();
            if let Some(answer) = tls_answer {
                assert_eq!(rest, SSL_REQUEST.to_be_bytes());
                s.write_all(&[answer]).unwrap();
                if answer == b'S' {
                    return;
                }
                s.read_exact(&mut len).unwrap();
                let mut rest = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                s.read_exact(&mut rest).unwrap();
                assert!(rest.windows(5).any(|w| w == b"user\0"));
            }
            let mut reply = vec![b'R'];
            reply.extend_from_slice(&8u32.to_be_bytes());
            reply.extend_from_slice(&code.to_be_bytes());
            s.write_all(&reply).unwrap();
        });
        port
    }

    fn probe(port: u16, prefer_tls: bool) -> CleartextProbe {
        let prefer_tls =
            prefer_tls.then(|| Arc::new(crate::tls::client_config(crate::SslMode::Prefer, None).unwrap()));
        CleartextProbe {
            targets: vec![("127.0.0.1".into(), port)],
            user: "ro".into(),
            database: Some("erp".into()),
            prefer_tls,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn cleartext_requests_are_refused_others_pass() {
        let err = probe(fake_server(None, AUTH_CLEARTEXT), false).check().unwrap_err().to_string();
        assert!(err.contains("clear text") && err.contains("allowCleartextPassword"), "{err}");
        assert!(probe(fake_server(Some(b'N'), AUTH_CLEARTEXT), true).check().is_err());
        // SCRAM (10) and md5 (5) do not send the password itself.
        assert!(probe(fake_server(None, 10), false).check().is_ok());
        assert!(probe(fake_server(None, 5), false).check().is_ok());
        // TLS accepted under `prefer`: the password travels inside TLS.
        assert!(probe(fake_server(Some(b'S'), AUTH_CLEARTEXT), true).check().is_ok());
    }
}
