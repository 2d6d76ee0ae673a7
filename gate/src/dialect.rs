//! The SQL dialects the gate knows, their names, and how each one is lexed and parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlparser::dialect::{
    Dialect as SqlDialect, GenericDialect, MsSqlDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect,
};

/// The SQL dialect of the database a query will run on.
///
/// Names (for [`FromStr`], [`fmt::Display`] and serde): `postgres`, `mysql`, `sqlite`, `mssql`,
/// `oracle`, `hana`, `generic`; `postgresql`, `mariadb` and `sqlserver` are accepted as aliases.
/// Parsing is case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// PostgreSQL 11+.
    #[serde(alias = "postgresql")]
    Postgres,
    /// MySQL 5.7+ and MariaDB 10.3+.
    #[serde(alias = "mariadb")]
    Mysql,
    /// SQLite 3.
    Sqlite,
    /// Microsoft SQL Server (T-SQL).
    #[serde(alias = "sqlserver")]
    Mssql,
    /// Oracle Database 12c+.
    Oracle,
    /// SAP HANA.
    Hana,
    /// Unknown target: sqlparser's generic dialect, lexed conservatively; only standard
    /// functions are allowed, and every dialect's never-allowed functions are refused.
    #[default]
    Generic,
}

/// How the driver that runs a text binds positional parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placeholders {
    /// `?` is bound as is (MySQL, SQLite, every ODBC driver).
    #[default]
    Question,
    /// Only `$1`, `$2`... bind (the PostgreSQL wire protocol): `?` is rewritten before judging.
    Dollar,
}

/// The query language of a target: SQL for the SQL engines, a JSON document for MongoDB, a
/// SQL subset translated into a collection export for Tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// SQL in [`Target::dialect`].
    #[default]
    Sql,
    /// A MongoDB read as a JSON document (module `mongo`): `{"collection", "filter",
    /// "projection", "sort", "skip", "limit"}` or `{"collection", "pipeline"}`.
    Mongo,
    /// A `SELECT` over Tally collections, judged as generic SQL first and then translated
    /// exactly into a collection export (module `tally`), or refused.
    Tally,
}

/// What a text is judged for: the engine's dialect, its driver's placeholder style and the
/// query language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Target {
    /// The engine's SQL dialect ([`Dialect::Generic`] for MongoDB and Tally).
    pub dialect: Dialect,
    /// How its driver binds parameters.
    pub placeholders: Placeholders,
    /// What the text is: SQL, a MongoDB JSON document, or Tally's SQL subset.
    pub language: Language,
}

impl Target {
    /// The target of a MongoDB connection.
    pub const MONGO: Target =
        Target { dialect: Dialect::Generic, placeholders: Placeholders::Question, language: Language::Mongo };

    /// The target of a Tally connection.
    pub const TALLY: Target =
        Target { dialect: Dialect::Generic, placeholders: Placeholders::Question, language: Language::Tally };
}

impl From<Dialect> for Target {
    fn from(dialect: Dialect) -> Self {
        Target { dialect, placeholders: Placeholders::Question, language: Language::Sql }
    }
}

/// A dialect name that [`Dialect::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDialect(pub String);

impl fmt::Display for UnknownDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown dialect `{}` (expected one of postgres, mysql, sqlite, mssql, oracle, hana, generic)",
            self.0
        )
    }
}

impl std::error::Error for UnknownDialect {}

impl Dialect {
    /// Every dialect, in a fixed order.
    pub const ALL: [Dialect; 7] = [
        Dialect::Postgres,
        Dialect::Mysql,
        Dialect::Sqlite,
        Dialect::Mssql,
        Dialect::Oracle,
        Dialect::Hana,
        Dialect::Generic,
    ];

    /// The canonical name, e.g. `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
            Dialect::Sqlite => "sqlite",
            Dialect::Mssql => "mssql",
            Dialect::Oracle => "oracle",
            Dialect::Hana => "hana",
            Dialect::Generic => "generic",
        }
    }

    /// Runs `f` with the sqlparser dialect the gate parses this target with (for tools and tests
    /// that want to parse exactly as the gate does).
    ///
    /// Oracle uses sqlparser's Oracle dialect (non-nested comments, `q'[..]'` strings, no
    /// backticks, like the server) with table versions (`FOR SYSTEM_TIME AS OF`), the form the
    /// gate judges Oracle flashback queries in. HANA has no sqlparser dialect: it is the generic one without
    /// the features HANA's own lexer lacks (nested comments, `E'..'` and `q'..'` strings), so that
    /// the parser never reads as a string or comment what the server reads as code.
    pub fn with_sqlparser_dialect<R>(self, f: impl FnOnce(&dyn SqlDialect) -> R) -> R {
        match self {
            Dialect::Postgres => f(&PostgreSqlDialect {}),
            Dialect::Mysql => f(&MySqlDialect {}),
            Dialect::Sqlite => f(&SQLiteDialect {}),
            Dialect::Mssql => f(&MsSqlDialect {}),
            Dialect::Oracle => f(&oracle::OracleFlashback::new()),
            Dialect::Hana => f(&hana::HanaDialect::new()),
            Dialect::Generic => f(&GenericDialect {}),
        }
    }

    /// Bit of this dialect in a [`crate::deny`] mask.
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

mod oracle {
    use sqlparser::derive_dialect;
    use sqlparser::dialect::OracleDialect;

    derive_dialect!(OracleFlashback, OracleDialect, preserve_type_id = true, overrides = {
        supports_table_versioning = true,
    });
}

mod hana {
    use sqlparser::derive_dialect;
    use sqlparser::dialect::GenericDialect;

    derive_dialect!(HanaDialect, GenericDialect, preserve_type_id = true, overrides = {
        supports_nested_comments = false,
        supports_string_escape_constant = false,
        supports_quote_delimited_string = false,
        supports_from_first_select = false,
    });
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::Mysql,
            "sqlite" => Dialect::Sqlite,
            "mssql" | "sqlserver" => Dialect::Mssql,
            "oracle" => Dialect::Oracle,
            "hana" => Dialect::Hana,
            "generic" => Dialect::Generic,
            _ => return Err(UnknownDialect(s.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for d in Dialect::ALL {
            assert_eq!(d.to_string().parse::<Dialect>().unwrap(), d);
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
            assert_eq!(serde_json::from_str::<Dialect>(&format!("\"{d}\"")).unwrap(), d);
        }
        assert_eq!("PostgreSQL".parse::<Dialect>().unwrap(), Dialect::Postgres);
        assert_eq!("mariadb".parse::<Dialect>().unwrap(), Dialect::Mysql);
        assert_eq!("SqlServer".parse::<Dialect>().unwrap(), Dialect::Mssql);
        assert_eq!(serde_json::from_str::<Dialect>("\"mariadb\"").unwrap(), Dialect::Mysql);
        assert!("db2".parse::<Dialect>().unwrap_err().to_string().contains("db2"));
    }
}
