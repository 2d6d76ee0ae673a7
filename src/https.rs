//! An HTTPS client (ureq) that uses *our* rustls configuration.
//!
//! ureq's public TLS options cannot take a rustls `ClientConfig` (no TLS-1.3-only switch, no
//! private CA on top of the Mozilla roots), so we plug our own connector into its transport
//! chain: `TcpConnector` → `ConnectProxyConnector` (HTTP CONNECT proxies) → [`OurTls`].
//! The result is the same TLS 1.3-only, verifying configuration the WebSocket link uses.
//!
//! It carries chunk uploads only, so it is strict: plain `http://` is refused before a socket
//! is opened, and redirects are not followed (a 3xx comes back as a response), so a chunk goes
//! to the URL [`crate::uploader::UploadPolicy`] accepted or nowhere.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

/// Longest TCP connect (plus proxy CONNECT) of one request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a ureq agent on `tls`, optionally through an HTTP CONNECT proxy.
pub fn agent(
    tls: Arc<ClientConfig>,
    proxy: Option<&str>,
    timeout: Duration,
) -> Result<ureq::Agent, ureq::Error> {
    let proxy = proxy.map(ureq::Proxy::new).transpose()?;
    let proxy_hop = proxy.as_ref().map(|p| (p.host().to_owned(), p.port()));
    let config = ureq::Agent::config_builder()
        .proxy(proxy)
        .timeout_global(Some(timeout))
        // A host that does not answer fails the attempt early (the uploader then retries or
        // waits for the next session) instead of using up the whole request budget.
        .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build();
    let connector = ()
        .chain(HttpsOnly { proxy: proxy_hop })
        // The CONNECT connector opens its own socket to the proxy; it must come first, or
        // the TCP connector dials the (unresolved, empty) target addresses and fails.
        .chain(ConnectProxyConnector::default())
        .chain(TcpConnector::default())
        .chain(OurTls(tls));
    Ok(ureq::Agent::with_parts(config, connector, DefaultResolver::default()))
}

/// First in the chain: refuses a plain `http://` URL before any socket is opened — except the
/// hop to the configured CONNECT proxy itself (`proxy`: its host and port), which ureq opens
/// through the same chain before it sends `CONNECT`.
#[derive(Debug)]
pub struct HttpsOnly {
    /// The CONNECT proxy's host and port.
    pub proxy: Option<(String, u16)>,
}

impl<In: Transport> Connector<In> for HttpsOnly {
    type Out = In;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<In>, ureq::Error> {
        let to_proxy = self.proxy.as_ref().is_some_and(|(host, port)| {
            details.uri.host() == Some(host.as_str()) && details.uri.port_u16().unwrap_or(80) == *port
        });
        if !details.needs_tls() && !to_proxy {
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
        let agent = super::agent(tls, None, Duration::from_secs(5)).unwrap();
        let err = agent.post(&format!("http://127.0.0.1:{port}/upload")).send(&b"x"[..]).unwrap_err();
        assert!(err.to_string().contains("plain http refused"), "{err}");
        assert!(listener.accept().is_err(), "a connection was made");
    }
}
