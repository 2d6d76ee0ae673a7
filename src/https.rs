//! An HTTPS client (ureq) that uses *our* rustls configuration and *our* proxy code.
//!
//! ureq's public TLS options cannot take a rustls `ClientConfig` (no TLS-1.3-only switch, no
//! private CA on top of the Mozilla roots, no SPKI pins), and its CONNECT proxy connector knows
//! nothing of our vault-held credentials or of how a proxy refuses, so we plug our own
//! connectors into its transport chain: [`HttpsOnly`] → [`Dial`] ([`crate::proxy::dial`]: direct
//! or through the CONNECT tunnel, the same code the link uses) → [`OurTls`]. Name resolution is
//! left to `Dial` too ([`NoResolve`]): behind a proxy the target's name is the proxy's to
//! resolve.
//!
//! It carries chunk uploads (and the long-poll transport and update downloads, `update.rs`), so
//! it is strict: plain `http://` is refused before a socket
//! is opened, and redirects are not followed (a 3xx comes back as a response), so a chunk goes
//! to the URL [`crate::uploader::UploadPolicy`] accepted or nowhere.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport, TransportAdapter,
};

use crate::proxy::ProxySettings;

/// Longest TCP connect (plus proxy CONNECT) of one request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a ureq agent on `tls`, reaching hosts along `proxy`'s routes.
pub fn agent(
    tls: Arc<ClientConfig>,
    proxy: ProxySettings,
    timeout: Duration,
) -> Result<ureq::Agent, ureq::Error> {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // A host that does not answer fails the attempt early (the uploader then retries or
        // waits for the next session) instead of using up the whole request budget.
        .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build();
    let connector = ().chain(HttpsOnly).chain(Dial(proxy)).chain(OurTls(tls));
    Ok(ureq::Agent::with_parts(config, connector, NoResolve))
}

/// Resolves nothing: [`Dial`] resolves the target (direct) or the proxy (tunnelled) itself.
#[derive(Debug)]
pub struct NoResolve;

impl Resolver for NoResolve {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        // ureq wants at least one address; `Dial` never looks at it.
        let mut addrs = self.empty();
        addrs.push(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(addrs)
    }
}

/// Opens the TCP connection along the route [`ProxySettings`] gives for the URL's host: direct,
/// or through the proxy's CONNECT tunnel (with its Basic credentials).
pub struct Dial(pub ProxySettings);

impl fmt::Debug for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dial")
    }
}

impl<In: Transport> Connector<In> for Dial {
    type Out = Either<In, TcpTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if chained.is_some() {
            return Ok(chained.map(Either::A));
        }
        let host = details.uri.host().ok_or(ureq::Error::Tls("no host in url"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = details.uri.port_u16().unwrap_or(443);
        let budget = if details.timeout.after.is_not_happening() {
            CONNECT_TIMEOUT
        } else {
            (*details.timeout.after).min(CONNECT_TIMEOUT)
        };
        let route = self.0.route(host, port);
        let stream = crate::proxy::dial(&route, host, port, Instant::now() + budget)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e.to_string())))?;
        let _ = stream.set_nodelay(true);
        let buffers =
            LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(Either::B(TcpTransport { stream, buffers })))
    }
}

/// A plain TCP transport for ureq (its own is not public).
pub struct TcpTransport {
    stream: TcpStream,
    buffers: LazyBuffers,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TcpTransport")
    }
}

/// A socket timeout for `timeout` (`None`: none; never zero, which would mean "none").
fn socket_timeout(timeout: NextTimeout) -> Option<Duration> {
    (!timeout.after.is_not_happening()).then(|| (*timeout.after).max(Duration::from_millis(1)))
}

impl Transport for TcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.set_write_timeout(socket_timeout(timeout.for_write()))?;
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        self.stream.flush()?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.set_read_timeout(socket_timeout(timeout.for_read()))?;
        let input = self.buffers.input_append_buf();
        let amount = match self.stream.read(input) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(ureq::Error::Timeout(timeout.reason));
            }
            Err(e) => return Err(e.into()),
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // Open unless the peer closed: a non-blocking peek sees EOF (0) or an error.
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let open = match self.stream.peek(&mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        };
        self.stream.set_nonblocking(false).is_ok() && open
    }
}

/// First in the chain: refuses a plain `http://` URL before any socket is opened.
#[derive(Debug)]
pub struct HttpsOnly;

impl<In: Transport> Connector<In> for HttpsOnly {
    type Out = In;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<In>, ureq::Error> {
        if !details.needs_tls() {
            return Err(ureq::Error::Tls("plain http refused: uploads use https only"));
        }
        Ok(chained)
    }
}

/// Wraps an HTTPS connection in TLS with our `ClientConfig`.
pub struct OurTls(pub Arc<ClientConfig>);

impl fmt::Debug for OurTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OurTls")
    }
}

impl<In: Transport> Connector<In> for OurTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Err(ureq::Error::ConnectionFailed);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().ok_or(ureq::Error::Tls("no host in url"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_owned()).map_err(|_| ureq::Error::Tls("invalid server name"))?;
        let mut conn = ClientConnection::new(self.0.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers =
            LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(Either::B(TlsTransport { buffers, stream: StreamOwned { conn, sock } })))
    }
}

/// A TLS transport for ureq.
pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        self.stream.flush()?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    #[test]
    fn plain_http_is_refused_before_any_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = crate::tls::client_config(None).unwrap();
        let agent = super::agent(tls, crate::proxy::ProxySettings::direct(), Duration::from_secs(5)).unwrap();
        let err = agent.post(&format!("http://127.0.0.1:{port}/upload")).send(&b"x"[..]).unwrap_err();
        assert!(err.to_string().contains("plain http refused"), "{err}");
        assert!(listener.accept().is_err(), "a connection was made");
    }
}
