//! Read-only user check (issue 3 §4): can the configured user write, and what SQL creates a
//! SELECT-only user instead. The session layer stays read-only whatever this finds.

use crate::catalog::{TextRows, is_yes};
use crate::{DriverError, OdbcDialect, PrivilegeReport};

/// Findings beyond this many are summarised in one line.
const MAX_FINDINGS: usize = 50;

/// Probes of one dialect: the current user and superuser flag, then rows of findings
/// (one text column each) that each mean "can write".
struct Probes {
    /// One row: user name, superuser flag (`YES`/`TRUE`/`1`...).
    whoami: &'static str,
    /// Each row: one finding.
    findings: &'static [&'static str],
}

fn probes(dialect: OdbcDialect) -> Option<Probes> {
    Some(match dialect {
        OdbcDialect::Postgres => Probes {
            whoami: "SELECT current_user::text, CASE WHEN r.rolsuper THEN 'YES' ELSE 'NO' END \
                     FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            findings: &[
                "SELECT 'can create roles' FROM pg_catalog.pg_roles WHERE rolname = current_user AND rolcreaterole",
                "SELECT p.priv || ' on ' || n.nspname || '.' || c.relname \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(priv) \
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg\\_%' \
                 AND pg_catalog.has_table_privilege(c.oid, p.priv) ORDER BY 1",
                "SELECT 'owns ' || CASE c.relkind WHEN 'v' THEN 'view ' ELSE 'table ' END || n.nspname || '.' || c.relname \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg\\_%' \
                 AND pg_catalog.pg_has_role(c.relowner, 'USAGE') ORDER BY 1",
            ],
        },
        OdbcDialect::Mysql => Probes {
            whoami: "SELECT CURRENT_USER(), IF(EXISTS(SELECT 1 FROM INFORMATION_SCHEMA.USER_PRIVILEGES \
                     WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                     SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') AND PRIVILEGE_TYPE = 'SUPER'), 'YES', 'NO')",
            findings: &[
                "SELECT CONCAT(PRIVILEGE_TYPE, ' on *.*') FROM INFORMATION_SCHEMA.USER_PRIVILEGES \
                 WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                 SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') \
                 AND PRIVILEGE_TYPE IN ('INSERT', 'UPDATE', 'DELETE', 'DROP', 'ALTER', 'CREATE', 'FILE', \
                 'SUPER', 'CREATE USER', 'GRANT OPTION') ORDER BY 1",
                "SELECT CONCAT(PRIVILEGE_TYPE, ' on ', TABLE_SCHEMA, '.*') FROM INFORMATION_SCHEMA.SCHEMA_PRIVILEGES \
                 WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                 SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') \
                 AND PRIVILEGE_TYPE IN ('INSERT', 'UPDATE', 'DELETE', 'DROP', 'ALTER', 'CREATE') ORDER BY 1",
                "SELECT CONCAT(PRIVILEGE_TYPE, ' on ', TABLE_SCHEMA, '.', TABLE_NAME) \
                 FROM INFORMATION_SCHEMA.TABLE_PRIVILEGES \
                 WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
                 SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') \
                 AND PRIVILEGE_TYPE IN ('INSERT', 'UPDATE', 'DELETE', 'DROP', 'ALTER') ORDER BY 1",
            ],
        },
        OdbcDialect::SqlServer => Probes {
            whoami: "SELECT SUSER_SNAME(), IIF(IS_SRVROLEMEMBER('sysadmin') = 1, 'YES', 'NO')",
            findings: &[
                "SELECT 'member of ' + r.name FROM sys.database_role_members m \
                 JOIN sys.database_principals r ON r.principal_id = m.role_principal_id \
                 WHERE m.member_principal_id = DATABASE_PRINCIPAL_ID() \
                 AND r.name IN ('db_owner', 'db_datawriter', 'db_ddladmin') ORDER BY 1",
                "SELECT permission_name + ' on database' FROM fn_my_permissions(NULL, 'DATABASE') \
                 WHERE permission_name IN ('INSERT', 'UPDATE', 'DELETE', 'ALTER', 'CONTROL') ORDER BY 1",
            ],
        },
        OdbcDialect::Oracle => Probes {
            whoami: "SELECT USER, CASE WHEN EXISTS (SELECT 1 FROM SESSION_ROLES WHERE ROLE = 'DBA') \
                     THEN 'YES' ELSE 'NO' END FROM DUAL",
            findings: &[
                "SELECT PRIVILEGE FROM SESSION_PRIVS WHERE PRIVILEGE IN ('INSERT ANY TABLE', \
                 'UPDATE ANY TABLE', 'DELETE ANY TABLE', 'DROP ANY TABLE', 'ALTER ANY TABLE', \
                 'CREATE ANY TABLE') ORDER BY 1",
                "SELECT PRIVILEGE || ' on ' || TABLE_SCHEMA || '.' || TABLE_NAME FROM ALL_TAB_PRIVS \
                 WHERE GRANTEE = USER AND PRIVILEGE IN ('INSERT', 'UPDATE', 'DELETE') ORDER BY 1",
                "SELECT 'owns table ' || USER || '.' || TABLE_NAME FROM USER_TABLES ORDER BY 1",
            ],
        },
        OdbcDialect::Hana => Probes {
            whoami: "SELECT CURRENT_USER, CASE WHEN EXISTS (SELECT 1 FROM SYS.EFFECTIVE_PRIVILEGES \
                     WHERE USER_NAME = CURRENT_USER AND PRIVILEGE = 'DATA ADMIN') THEN 'YES' ELSE 'NO' END \
                     FROM DUMMY",
            findings: &[
                "SELECT PRIVILEGE || ' on ' || IFNULL(SCHEMA_NAME, '*') || '.' || IFNULL(OBJECT_NAME, '*') \
                 FROM SYS.EFFECTIVE_PRIVILEGES WHERE USER_NAME = CURRENT_USER \
                 AND PRIVILEGE IN ('INSERT', 'UPDATE', 'DELETE', 'DROP', 'ALTER') ORDER BY 1",
                "SELECT 'owns schema ' || SCHEMA_NAME FROM SYS.SCHEMAS WHERE SCHEMA_OWNER = CURRENT_USER \
                 AND SCHEMA_NAME NOT LIKE '\\_SYS%' ESCAPE '\\' ORDER BY 1",
            ],
        },
        OdbcDialect::Sqlite | OdbcDialect::Generic => return None,
    })
}

/// The SQL an administrator runs to create a SELECT-only user (`database` names the
/// database or schema the user reads).
pub fn suggested_sql(dialect: OdbcDialect, database: &str) -> String {
    let db = if database.is_empty() { "<database>" } else { database };
    match dialect {
        OdbcDialect::Postgres => format!(
            "CREATE ROLE mc_readonly LOGIN PASSWORD '<choose a password>';\n\
             ALTER ROLE mc_readonly SET default_transaction_read_only = on;\n\
             GRANT CONNECT ON DATABASE \"{db}\" TO mc_readonly;\n\
             GRANT USAGE ON SCHEMA public TO mc_readonly;\n\
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO mc_readonly;\n\
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO mc_readonly;\n"
        ),
        OdbcDialect::Mysql => format!(
            "CREATE USER 'mc_readonly'@'%' IDENTIFIED BY '<choose a password>';\n\
             GRANT SELECT, SHOW VIEW ON `{db}`.* TO 'mc_readonly'@'%';\n"
        ),
        OdbcDialect::SqlServer => format!(
            "CREATE LOGIN mc_readonly WITH PASSWORD = '<choose a password>';\n\
             USE [{db}];\n\
             CREATE USER mc_readonly FOR LOGIN mc_readonly;\n\
             ALTER ROLE db_datareader ADD MEMBER mc_readonly;\n"
        ),
        OdbcDialect::Oracle => format!(
            "CREATE USER mc_readonly IDENTIFIED BY \"<choose a password>\";\n\
             GRANT CREATE SESSION TO mc_readonly;\n\
             -- one line per table the connector may read:\n\
             GRANT READ ON {db}.<table> TO mc_readonly;\n"
        ),
        OdbcDialect::Hana => format!(
            "CREATE RESTRICTED USER MC_READONLY PASSWORD \"<choose a password>\" NO FORCE_FIRST_PASSWORD_CHANGE;\n\
             ALTER USER MC_READONLY ENABLE CLIENT CONNECT;\n\
             GRANT SELECT ON SCHEMA \"{db}\" TO MC_READONLY;\n"
        ),
        OdbcDialect::Sqlite => "-- SQLite has no users: the agent opens the file read-only; \
                                remove write permission from the file for the agent's OS user \
                                (chmod a-w) for a second layer.\n"
            .to_owned(),
        OdbcDialect::Generic => "-- Create a database user with SELECT privileges only and \
                                 use it for this connection.\n"
            .to_owned(),
    }
}

/// Runs the probes of `dialect` and builds the report.
pub(crate) fn check(
    rows: &mut dyn TextRows,
    dialect: OdbcDialect,
    database: &str,
) -> Result<PrivilegeReport, DriverError> {
    let suggested = suggested_sql(dialect, database);
    let Some(probes) = probes(dialect) else {
        return Ok(PrivilegeReport {
            user: String::new(),
            can_write: false,
            superuser: false,
            findings: vec![
                "privileges cannot be inspected for this ODBC source; use a SELECT-only user".into(),
            ],
            suggested_sql: suggested,
        });
    };
    let (mut user, mut superuser) = (String::new(), false);
    rows.each_row(probes.whoami, &mut |r| {
        user = r.first().copied().flatten().unwrap_or_default().to_owned();
        superuser = r.get(1).copied().flatten().is_some_and(is_yes);
        Ok(())
    })?;
    let mut findings = Vec::new();
    if superuser {
        findings.push("superuser".to_owned());
    }
    for probe in probes.findings {
        rows.each_row(probe, &mut |r| {
            if let Some(finding) = r.first().copied().flatten() {
                findings.push(finding.to_owned());
            }
            Ok(())
        })?;
    }
    Ok(report(user, superuser, findings, suggested))
}

pub(crate) fn report(
    user: String,
    superuser: bool,
    mut findings: Vec<String>,
    suggested_sql: String,
) -> PrivilegeReport {
    findings.sort();
    findings.dedup();
    if findings.len() > MAX_FINDINGS {
        let more = findings.len() - MAX_FINDINGS;
        findings.truncate(MAX_FINDINGS);
        findings.push(format!("... and {more} more"));
    }
    PrivilegeReport { user, can_write: superuser || !findings.is_empty(), superuser, findings, suggested_sql }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dialect_suggests_a_select_only_user() {
        for dialect in OdbcDialect::ALL {
            let sql = suggested_sql(dialect, "erp");
            assert!(!sql.is_empty(), "{dialect}");
            assert!(!sql.to_ascii_uppercase().contains("INSERT"), "{dialect}: {sql}");
        }
        assert!(suggested_sql(OdbcDialect::Postgres, "erp").contains("GRANT SELECT ON ALL TABLES"));
        assert!(suggested_sql(OdbcDialect::Mysql, "erp").contains("GRANT SELECT, SHOW VIEW ON `erp`.*"));
        assert!(suggested_sql(OdbcDialect::SqlServer, "erp").contains("db_datareader"));
    }

    #[test]
    fn long_finding_lists_are_summarised() {
        let findings = (0..60).map(|i| format!("INSERT on t{i:02}")).collect();
        let r = report("u".into(), false, findings, String::new());
        assert!(r.can_write);
        assert_eq!(r.findings.len(), MAX_FINDINGS + 1);
        assert_eq!(r.findings.last().unwrap(), "... and 10 more");
        assert!(!report("u".into(), false, Vec::new(), String::new()).can_write);
    }
}
