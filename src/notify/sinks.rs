//! Where notices go: the desktop (notify-rust: libdbus on Linux, toasts on Windows) and email
//! (lettre's blocking SMTP transport over rustls; implicit TLS or required STARTTLS).

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport as _};
use zeroize::Zeroizing;

use super::NotifyError;
use super::settings::{EmailConfig, SMTP_PASSWORD_ID, SmtpTls, VAULT_REF};
use crate::config::AgentConfig;
use crate::protocol::control::Notice;

/// How long one SMTP exchange (connect, each command) may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether this session can show desktop notifications now: on Linux a notification service
/// answers on the session bus (none on a headless server); on Windows and macOS, always.
pub fn desktop_available() -> bool {
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        notify_rust::get_server_information().is_ok()
    }
    #[cfg(not(all(unix, not(target_os = "macos"))))]
    {
        true
    }
}

/// Shows `notice` as a desktop notification.
pub fn show_desktop(notice: &Notice) -> Result<(), NotifyError> {
    let mut notification = notify_rust::Notification::new();
    notification.appname("Mini Connector").summary(&notice.title).body(&notice.body);
    notification.show().map(|_| ()).map_err(|e| NotifyError::Desktop(e.to_string()))
}

/// An SMTP sink, ready to send (the password is read when it is built and kept zeroizing).
pub struct EmailSink {
    config: EmailConfig,
    transport: SmtpTransport,
    /// For scrubbing error texts (defence in depth: a server may echo what it was sent).
    password: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSink")
            .field("host", &self.config.smtp_host)
            .field("port", &self.config.port())
            .field("tls", &self.config.tls)
            .field("username", &self.config.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl EmailSink {
    /// Builds the transport for `email`, reading the password behind its `passwordRef` (the
    /// vault of `agent` by default). Nothing is dialled yet.
    pub fn new(agent: &AgentConfig, email: &EmailConfig) -> Result<Self, NotifyError> {
        let host = email.smtp_host.clone();
        let tls = match email.tls {
            SmtpTls::NoneLocalhostOnly => {
                if !super::settings::is_loopback_host(&host) {
                    return Err(NotifyError::Config(
                        "email.tls `none-localhost-only` needs a loopback smtpHost".into(),
                    ));
                }
                Tls::None
            }
            mode => {
                let mut builder = TlsParameters::builder(host.clone());
                if let Some(path) = &email.ca_cert_path {
                    let pem = std::fs::read(path).map_err(|e| {
                        NotifyError::Config(format!("email.caCertPath {}: {e}", path.display()))
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| {
                        NotifyError::Config(format!("email.caCertPath {}: {e}", path.display()))
                    })?;
                    builder = builder.add_root_certificate(cert);
                }
                let params =
                    builder.build_rustls().map_err(|e| NotifyError::Config(format!("email TLS: {e}")))?;
                if mode == SmtpTls::Implicit { Tls::Wrapper(params) } else { Tls::Required(params) }
            }
        };
        let mut builder =
            SmtpTransport::builder_dangerous(host).port(email.port()).tls(tls).timeout(Some(SMTP_TIMEOUT));
        let mut password = None;
        if let Some(user) = &email.username {
            let secret = read_password(agent, email)?;
            builder = builder.credentials(Credentials::new(user.clone(), secret.to_string()));
            password = Some(secret);
        }
        Ok(Self { config: email.clone(), transport: builder.build(), password })
    }

    /// Sends `notice` to every recipient (one message). The subject names the connector.
    pub fn send(&self, connector: &str, notice: &Notice) -> Result<(), NotifyError> {
        let parse = |field: &str, address: &str| {
            address.parse::<Mailbox>().map_err(|e| NotifyError::Config(format!("{field} `{address}`: {e}")))
        };
        let mut message = Message::builder()
            .from(parse("email.from", &self.config.from)?)
            .subject(format!("[Mini Connector: {connector}] {}", notice.title))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.config.to {
            message = message.to(parse("email.to", to)?);
        }
        let body = format!(
            "{}\n\nConnector: {connector}\nEvent: {}\nAt: {}\n\n-- \nSent by Mini Connector. Change which events send mail under `notifications.events` in the configuration.\n",
            notice.body,
            super::kind_label(notice.kind),
            notice.at
        );
        let message = message.body(body).map_err(|e| NotifyError::Config(format!("email message: {e}")))?;
        self.transport.send(&message).map(|_| ()).map_err(|e| NotifyError::Email(self.scrub(e.to_string())))
    }

    /// Removes the password from a message, should a library or server ever echo it.
    fn scrub(&self, message: String) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => message.replace(p.as_str(), "***"),
            _ => message,
        }
    }
}

/// The SMTP password behind `email.passwordRef`: the vault (`vault://smtp`, id
/// `smtp:password`), `env:VARIABLE` or `file:PATH`. Errors name the reference, never a value.
fn read_password(agent: &AgentConfig, email: &EmailConfig) -> Result<Zeroizing<String>, NotifyError> {
    let reference = email.password_ref();
    let fail = |reason: String| NotifyError::Password { reference: reference.to_owned(), reason };
    if reference == VAULT_REF {
        let Some(vault) = agent.open_existing_vault().map_err(|e| fail(e.to_string()))? else {
            return Err(fail("no vault yet: run `mini-connector notify set-password`".into()));
        };
        let secret = vault.get(SMTP_PASSWORD_ID).map_err(|e| match e {
            vault::VaultError::NotFound { .. } => {
                fail("no SMTP password stored: run `mini-connector notify set-password`".into())
            }
            other => fail(other.to_string()),
        })?;
        let text = secret.expose_str().ok_or_else(|| fail("the stored password is not UTF-8".into()))?;
        Ok(Zeroizing::new(text.to_owned()))
    } else if let Some(var) = reference.strip_prefix("env:") {
        std::env::var(var).map(Zeroizing::new).map_err(|e| fail(e.to_string()))
    } else if let Some(path) = reference.strip_prefix("file:") {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
        Ok(Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned()))
    } else {
        Err(fail("must be vault://smtp, env:VARIABLE or file:PATH".into()))
    }
}

/// Stores the SMTP password in `agent`'s vault (id `smtp:password`), creating the vault if
/// needed.
pub fn store_password(agent: &AgentConfig, password: &str) -> Result<(), NotifyError> {
    let vault = agent.open_vault().map_err(|e| NotifyError::Vault(e.to_string()))?;
    vault
        .put(SMTP_PASSWORD_ID, password.as_bytes())
        .map_err(|e| NotifyError::Vault(format!("storing the SMTP password: {e}")))
}
