//! TLS to the real servers (`scripts/db-servers.sh` runs both with a throw-away CA and a
//! certificate for `localhost` only), and the refusal of cleartext passwords without TLS.

use std::path::PathBuf;

use drivers::{ConnectionSpec, Database, DbKind, DriverError, SslMode};

use crate::common::{Owned, scalar};
use crate::servers::{env_or_skip, parse_url, shared, url_spec};

/// Why the database cannot be used: a setting refused at open (`Open`), or — the server
/// being contacted only once the pool needs a connection — what the first connection attempt
/// met (`Unavailable`, from `check_health`).
fn open_err(spec: &ConnectionSpec) -> String {
    match Database::open(spec).map(|db| db.check_health()) {
        Err(DriverError::Open(message)) | Ok(Err(DriverError::Unavailable(message))) => message,
        Err(other) | Ok(Err(other)) => panic!("expected an open or unavailable error, got {other:?}"),
        Ok(Ok(())) => panic!("expected an error, connection succeeded ({:?})", spec.ssl_mode),
    }
}

/// The TLS protocol of the pooled session, `None` for a plain one (asked of the server).
fn session_tls(db: &Database) -> Option<String> {
    let sql = match db.kind() {
        DbKind::Postgres => {
            "SELECT coalesce(max(version), '') FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
        }
        _ => {
            "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'"
        }
    };
    match scalar(db, sql) {
        Owned::Text(v) if v.is_empty() => None,
        Owned::Text(v) => Some(v),
        other => panic!("{other:?}"),
    }
}

struct Setup {
    kind: DbKind,
    spec: ConnectionSpec,
    ca: PathBuf,
    /// A certificate that is not the CA (the server's own): an unknown issuer as a root file.
    wrong_ca: PathBuf,
}

fn setups() -> Option<Vec<Setup>> {
    let (pg, my, ca) =
        (env_or_skip("MC_TEST_PG_URL")?, env_or_skip("MC_TEST_MYSQL_URL")?, env_or_skip("MC_DB_CA")?);
    let ca = PathBuf::from(ca);
    let wrong_ca = ca.with_file_name("server.pem");
    Some(
        [(DbKind::Postgres, pg), (DbKind::Mysql, my)]
            .into_iter()
            .map(|(kind, url)| Setup {
                kind,
                spec: url_spec(kind, &parse_url(&url)),
                ca: ca.clone(),
                wrong_ca: wrong_ca.clone(),
            })
            .collect(),
    )
}

#[test]
fn every_ssl_mode_does_what_it_says_against_the_real_servers() {
    let Some(setups) = setups() else { return };
    let _servers = shared();
    for Setup { kind, spec, ca, wrong_ca } in setups {
        let with = |ssl_mode: SslMode, root: Option<&PathBuf>, host: &str| ConnectionSpec {
            ssl_mode,
            ssl_root_cert: root.cloned(),
            host: Some(host.into()),
            ..spec.clone()
        };
        let open =
            |s: &ConnectionSpec| Database::open(s).unwrap_or_else(|e| panic!("{kind} {:?}: {e}", s.ssl_mode));

        assert_eq!(session_tls(&open(&with(SslMode::Disable, None, "127.0.0.1"))), None, "{kind}");
        for mode in [SslMode::Prefer, SslMode::Require] {
            let version = session_tls(&open(&with(mode, None, "127.0.0.1")));
            assert!(
                version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
                "{kind} {mode}: {version:?}"
            );
        }
        // verify-full: the certificate names `localhost`, not 127.0.0.1.
        let version = session_tls(&open(&with(SslMode::VerifyFull, Some(&ca), "localhost")));
        assert_eq!(version.as_deref(), Some("TLSv1.3"), "{kind}: TLS 1.3 preferred");
        let message = open_err(&with(SslMode::VerifyFull, Some(&ca), "127.0.0.1"));
        let mismatch = message.contains("NotValidForName") || message.contains("not valid for name");
        assert!(message.contains("TLS") && mismatch, "{kind}: {message}");
        // Without a CA file: the public roots, which do not know the test CA.
        let message = open_err(&with(SslMode::VerifyFull, None, "localhost"));
        assert!(message.contains("TLS") && message.contains("UnknownIssuer"), "{kind}: {message}");
        let message = open_err(&with(SslMode::VerifyFull, Some(&wrong_ca), "localhost"));
        assert!(message.contains("UnknownIssuer"), "{kind}: {message}");
        match kind {
            DbKind::Postgres => {
                // verify-ca: the chain only, so 127.0.0.1 passes; a foreign CA does not.
                let db = open(&with(SslMode::VerifyCa, Some(&ca), "127.0.0.1"));
                assert!(session_tls(&db).is_some());
                let message = open_err(&with(SslMode::VerifyCa, Some(&wrong_ca), "127.0.0.1"));
                assert!(message.contains("UnknownIssuer"), "{message}");
            }
            _ => {
                let message = open_err(&with(SslMode::VerifyCa, Some(&ca), "127.0.0.1"));
                assert!(message.contains("verify-ca is not available for mysql"), "{message}");
            }
        }
        let message = open_err(&with(SslMode::VerifyCa, None, "127.0.0.1"));
        assert!(message.contains("needs `sslRootCert`"), "{kind}: {message}");
        let message = open_err(&with(SslMode::Require, Some(&ca), "127.0.0.1"));
        assert!(message.contains("only used by sslMode verify-ca and verify-full"), "{kind}: {message}");
        let message =
            open_err(&with(SslMode::VerifyFull, Some(&ca.with_file_name("missing.pem")), "localhost"));
        assert!(message.contains("missing.pem"), "{kind}: {message}");
        // No password in any of these messages.
        assert!(!message.contains("ro-test-pw"));
    }
}

#[test]
fn postgres_cleartext_password_is_refused_without_tls() {
    let Some(url) = env_or_skip("MC_TEST_PG_CLEAR_URL") else { return };
    let _servers = shared();
    let url = parse_url(&url);
    let spec = |ssl_mode: SslMode, allow: bool| ConnectionSpec {
        ssl_mode,
        allow_cleartext_password: allow,
        ..url_spec(DbKind::Postgres, &url)
    };
    // The server's pg_hba asks this user for the password in clear text.
    let message = open_err(&spec(SslMode::Disable, false));
    assert!(message.contains("clear text") && message.contains("allowCleartextPassword"), "{message}");
    assert!(!message.contains(&url.password), "{message}");
    // Inside TLS the same password authentication is fine.
    for mode in [SslMode::Prefer, SslMode::Require] {
        let db = Database::open(&spec(mode, false)).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(session_tls(&db).is_some(), "{mode}");
    }
    // Allowed explicitly: the connection runs (without TLS).
    let db = Database::open(&spec(SslMode::Disable, true)).unwrap();
    assert_eq!(session_tls(&db), None);
}
