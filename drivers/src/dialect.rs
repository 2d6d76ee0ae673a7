//! Dialect profiles: what differs between database engines behind one driver.
//!
//! A profile gives the statement-check parser, the session setup that makes a connection
//! read-only, the catalogue SQL of schema discovery (one fixed row layout for every dialect,
//! see [`CatalogSql`]), the privilege probes and the mapping of declared type names to
//! [`WireType`]s. PostgreSQL and MySQL profiles serve both their native drivers and ODBC; SQL
//! Server, Oracle and SAP HANA exist only behind ODBC and are tested without a server.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DriverError, WireType};

/// Which SQL dialect a connection speaks; for ODBC connections it is chosen in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OdbcDialect {
    /// Microsoft SQL Server 2016+ (`sys.*` catalogue).
    #[serde(alias = "mssql")]
    SqlServer,
    /// Oracle 12c+ (`ALL_*` views).
    Oracle,
    /// SAP HANA (`SYS.TABLES`, `SYS.TABLE_COLUMNS`).
    Hana,
    /// PostgreSQL (`pg_catalog`).
    #[serde(alias = "postgresql")]
    Postgres,
    /// MySQL / MariaDB (`INFORMATION_SCHEMA`).
    #[serde(alias = "mariadb")]
    Mysql,
    /// SQLite (`PRAGMA` table functions).
    Sqlite,
    /// Anything else: ODBC catalog functions (`SQLTables`, `SQLColumns`, ...).
    Generic,
}

impl OdbcDialect {
    /// Every dialect, for tests and documentation.
    pub const ALL: [OdbcDialect; 7] =
        [Self::SqlServer, Self::Oracle, Self::Hana, Self::Postgres, Self::Mysql, Self::Sqlite, Self::Generic];

    /// The lowercase name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SqlServer => "sqlserver",
            Self::Oracle => "oracle",
            Self::Hana => "hana",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
            Self::Generic => "generic",
        }
    }

    /// The read-only gate's dialect for this engine (ODBC: the configured profile).
    pub fn gate_dialect(self) -> gate::Dialect {
        match self {
            Self::SqlServer => gate::Dialect::Mssql,
            Self::Oracle => gate::Dialect::Oracle,
            Self::Hana => gate::Dialect::Hana,
            Self::Postgres => gate::Dialect::Postgres,
            Self::Mysql => gate::Dialect::Mysql,
            Self::Sqlite => gate::Dialect::Sqlite,
            Self::Generic => gate::Dialect::Generic,
        }
    }

    /// The health-check query.
    pub fn ping_sql(self) -> &'static str {
        match self {
            Self::Oracle => "SELECT 1 FROM DUAL",
            Self::Hana => "SELECT 1 FROM DUMMY",
            _ => "SELECT 1",
        }
    }

    /// Statements run once on every new ODBC connection, after `SQL_ATTR_ACCESS_MODE` was set
    /// to read-only (which many drivers only take as a hint).
    pub fn odbc_session_setup(self) -> &'static [&'static str] {
        match self {
            Self::Postgres => &[
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                "SET default_transaction_read_only = on",
            ],
            Self::Mysql => &["SET SESSION TRANSACTION READ ONLY", "SET time_zone = '+00:00'"],
            Self::Sqlite => &["PRAGMA query_only = ON"],
            // SQL Server has no session-wide read-only switch: the read-only user is the layer
            // (see `write_privileges`), plus `ApplicationIntent=ReadOnly` in the connection
            // string for availability-group secondaries.
            Self::SqlServer => &["SET XACT_ABORT ON"],
            // Oracle and HANA: per transaction, see `odbc_begin_read_only`.
            Self::Oracle | Self::Hana | Self::Generic => &[],
        }
    }

    /// Statement that starts each query's transaction read-only (the connection then runs
    /// with autocommit off and commits or rolls back after each query).
    pub fn odbc_begin_read_only(self) -> Option<&'static str> {
        match self {
            // PostgreSQL and MySQL: the session characteristic set at connect covers every
            // (autocommit) statement; a `START TRANSACTION` here would nest inside the
            // driver's own transaction handling.
            Self::Oracle | Self::Hana => Some("SET TRANSACTION READ ONLY"),
            Self::Postgres | Self::Mysql | Self::SqlServer | Self::Sqlite | Self::Generic => None,
        }
    }

    /// Whether text is fetched as UTF-8 (`SQL_C_CHAR`) rather than UTF-16 (`SQL_C_WCHAR`):
    /// MariaDB Connector/ODBC under-reports the length of wide values with multi-byte
    /// characters (`Øresund Logistik ApS` came back one character short), while it returns
    /// UTF-8 for narrow text with `CharacterSet=utf8mb4`.
    pub fn odbc_narrow_text(self) -> bool {
        self == Self::Mysql
    }

    /// Placeholder text for parameter `n` (1-based) as the engine's ODBC driver expects it:
    /// `?` everywhere (drivers translate to `@P1`, `:1`, `$1` themselves).
    pub fn placeholder(self, _n: usize) -> &'static str {
        "?"
    }

    /// The catalogue queries of schema discovery; `None` for [`Generic`](Self::Generic),
    /// which uses the ODBC catalog functions instead.
    pub fn catalog_sql(self) -> Option<&'static CatalogSql> {
        match self {
            Self::Postgres => Some(&POSTGRES_CATALOG),
            Self::Mysql => Some(&MYSQL_CATALOG),
            Self::SqlServer => Some(&SQLSERVER_CATALOG),
            Self::Oracle => Some(&ORACLE_CATALOG),
            Self::Hana => Some(&HANA_CATALOG),
            Self::Sqlite => Some(&SQLITE_CATALOG),
            Self::Generic => None,
        }
    }

    /// Maps a declared type name (as the catalogue prints it) to a wire type.
    pub fn wire_type(self, declared: &str) -> WireType {
        let t = declared.trim().to_ascii_lowercase();
        if t.is_empty() {
            return WireType::Unknown;
        }
        match self {
            Self::Postgres => postgres_wire_type(&t),
            Self::Mysql => mysql_wire_type(&t),
            Self::SqlServer => sqlserver_wire_type(&t),
            Self::Oracle => oracle_wire_type(&t),
            Self::Hana => hana_wire_type(&t),
            Self::Sqlite => crate::sqlite::wire_type(declared),
            Self::Generic => generic_wire_type(&t),
        }
    }
}

impl fmt::Display for OdbcDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OdbcDialect {
    type Err = DriverError;

    /// Case-insensitive; aliases: `mssql`, `postgresql`, `mariadb`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sqlserver" | "mssql" => Ok(Self::SqlServer),
            "oracle" => Ok(Self::Oracle),
            "hana" => Ok(Self::Hana),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::Mysql),
            "sqlite" => Ok(Self::Sqlite),
            "generic" => Ok(Self::Generic),
            _ => Err(DriverError::UnsupportedKind(format!("odbc dialect {s}"))),
        }
    }
}

/// The name without a `(...)` suffix and without `unsigned`/`zerofill`.
fn base(t: &str) -> &str {
    t.split('(').next().unwrap_or(t).trim()
}

fn postgres_wire_type(t: &str) -> WireType {
    if t.ends_with("[]") {
        return WireType::Json;
    }
    // `timestamp(3) with time zone`: the precision sits before the zone words.
    if t.starts_with("timestamp") && t.ends_with(" with time zone") {
        return WireType::TimestampTz;
    }
    match base(t) {
        "smallint" | "integer" | "bigint" | "int" | "int2" | "int4" | "int8" | "smallserial" | "serial"
        | "bigserial" | "oid" => WireType::Integer,
        "numeric" | "decimal" => WireType::Decimal,
        "real" | "double precision" | "float4" | "float8" => WireType::Float,
        "boolean" | "bool" => WireType::Boolean,
        "text" | "character varying" | "varchar" | "character" | "char" | "bpchar" | "name" | "citext"
        | "xml" | "inet" | "cidr" | "macaddr" | "interval" | "money" => WireType::Text,
        "bytea" => WireType::Bytes,
        "date" => WireType::Date,
        "time without time zone" | "time" | "time with time zone" | "timetz" => WireType::Time,
        "timestamp without time zone" | "timestamp" => WireType::Timestamp,
        "timestamp with time zone" | "timestamptz" => WireType::TimestampTz,
        "uuid" => WireType::Uuid,
        "json" | "jsonb" => WireType::Json,
        other if other.starts_with("time(") || other.starts_with("time ") => WireType::Time,
        other if other.starts_with("timestamp") && other.ends_with("with time zone") => {
            if other.ends_with("without time zone") { WireType::Timestamp } else { WireType::TimestampTz }
        }
        other if other.starts_with("timestamp") => WireType::Timestamp,
        _ => WireType::Unknown,
    }
}

fn mysql_wire_type(t: &str) -> WireType {
    let unsigned = t.contains("unsigned");
    match base(t) {
        "tinyint" if t.starts_with("tinyint(1)") => WireType::Boolean,
        "bool" | "boolean" => WireType::Boolean,
        "bigint" if unsigned => WireType::Decimal,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => WireType::Integer,
        "decimal" | "numeric" | "dec" | "fixed" => WireType::Decimal,
        "float" | "double" | "double precision" | "real" => WireType::Float,
        "bit" if t.starts_with("bit(1)") || t == "bit" => WireType::Boolean,
        "bit" | "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "geometry"
        | "point" | "linestring" | "polygon" => WireType::Bytes,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" | "inet4"
        | "inet6" => WireType::Text,
        "date" => WireType::Date,
        "time" => WireType::Time,
        "datetime" => WireType::Timestamp,
        // Stored as an instant; sessions run with time_zone = '+00:00' and print `Z`.
        "timestamp" => WireType::TimestampTz,
        "json" => WireType::Json,
        "uuid" => WireType::Uuid,
        _ => WireType::Unknown,
    }
}

fn sqlserver_wire_type(t: &str) -> WireType {
    match base(t) {
        "bit" => WireType::Boolean,
        "tinyint" | "smallint" | "int" | "bigint" => WireType::Integer,
        "decimal" | "numeric" | "money" | "smallmoney" => WireType::Decimal,
        "float" | "real" => WireType::Float,
        "char" | "varchar" | "nchar" | "nvarchar" | "text" | "ntext" | "xml" | "sysname" | "hierarchyid" => {
            WireType::Text
        }
        "binary" | "varbinary" | "image" | "rowversion" | "timestamp" | "geography" | "geometry" => {
            WireType::Bytes
        }
        "date" => WireType::Date,
        "time" => WireType::Time,
        "datetime" | "datetime2" | "smalldatetime" => WireType::Timestamp,
        "datetimeoffset" => WireType::TimestampTz,
        "uniqueidentifier" => WireType::Uuid,
        _ => WireType::Unknown,
    }
}

fn oracle_wire_type(t: &str) -> WireType {
    // NUMBER(p,0) with p <= 18 fits an i64; every other NUMBER is exact decimal.
    if base(t) == "number" {
        if let Some(args) = t.strip_prefix("number(").and_then(|r| r.strip_suffix(')')) {
            let mut parts = args.split(',').map(str::trim);
            let precision: Option<u32> = parts.next().and_then(|p| p.parse().ok());
            let scale: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if scale == 0 && precision.is_some_and(|p| p <= 18) {
                return WireType::Integer;
            }
        }
        return WireType::Decimal;
    }
    if t.starts_with("timestamp") {
        return if t.contains("time zone") { WireType::TimestampTz } else { WireType::Timestamp };
    }
    match base(t) {
        "integer" | "int" | "smallint" | "float" | "decimal" => WireType::Decimal,
        "binary_float" | "binary_double" => WireType::Float,
        "boolean" => WireType::Boolean,
        "varchar2" | "nvarchar2" | "varchar" | "char" | "nchar" | "clob" | "nclob" | "long" | "rowid"
        | "urowid" | "xmltype" => WireType::Text,
        "raw" | "blob" | "long raw" | "bfile" => WireType::Bytes,
        // Oracle DATE carries a time of day.
        "date" => WireType::Timestamp,
        "json" => WireType::Json,
        other if other.starts_with("interval") => WireType::Text,
        _ => WireType::Unknown,
    }
}

fn hana_wire_type(t: &str) -> WireType {
    match base(t) {
        "tinyint" | "smallint" | "integer" | "int" | "bigint" => WireType::Integer,
        "decimal" | "smalldecimal" => WireType::Decimal,
        "real" | "double" | "float" => WireType::Float,
        "boolean" => WireType::Boolean,
        "varchar" | "nvarchar" | "alphanum" | "shorttext" | "clob" | "nclob" | "text" | "bintext"
        | "char" | "nchar" => WireType::Text,
        "varbinary" | "binary" | "blob" | "st_geometry" | "st_point" => WireType::Bytes,
        "date" | "daydate" => WireType::Date,
        "time" | "secondtime" => WireType::Time,
        "seconddate" | "timestamp" | "longdate" => WireType::Timestamp,
        _ => WireType::Unknown,
    }
}

fn generic_wire_type(t: &str) -> WireType {
    for profile in [postgres_wire_type, sqlserver_wire_type, mysql_wire_type] {
        let wire = profile(t);
        if wire != WireType::Unknown {
            return wire;
        }
    }
    crate::sqlite::wire_type(t)
}

/// Catalogue queries of one dialect. Every query returns text-convertible columns in a fixed
/// layout, so one routine assembles the schema for every engine:
///
/// * `tables`: schema, name, `TABLE`/`VIEW`, row-count estimate (NULL = unknown)
/// * `columns`: schema, table, column, ordinal, declared type, nullable (`YES`/`Y`/`TRUE`/`1`),
///   default expression
/// * `primary_keys`: schema, table, column, position
/// * `foreign_keys`: schema, table, constraint, column, position, referenced schema,
///   referenced table, referenced column
/// * `enums` (optional): schema, table, column, label, sort order
///
/// An empty schema name means "the connection's implicit schema" and is left out of the JSON.
#[derive(Debug)]
pub struct CatalogSql {
    /// Tables and views with row-count estimates.
    pub tables: &'static str,
    /// Columns of tables and views.
    pub columns: &'static str,
    /// Primary-key columns.
    pub primary_keys: &'static str,
    /// Foreign-key columns.
    pub foreign_keys: &'static str,
    /// Enum labels per column, when the engine has enum types.
    pub enums: Option<&'static str>,
}

static POSTGRES_CATALOG: CatalogSql = CatalogSql {
    tables: const_format_pg::TABLES,
    columns: const_format_pg::COLUMNS,
    primary_keys: const_format_pg::PRIMARY_KEYS,
    foreign_keys: const_format_pg::FOREIGN_KEYS,
    enums: Some(const_format_pg::ENUMS),
};

/// PostgreSQL catalogue SQL (pg_catalog; only relations the user may SELECT from).
mod const_format_pg {
    pub(super) const TABLES: &str = "SELECT n.nspname, c.relname, \
        CASE WHEN c.relkind IN ('v', 'm') THEN 'VIEW' ELSE 'TABLE' END, \
        CASE WHEN c.relkind IN ('r', 'p', 'f') AND c.reltuples >= 0 THEN c.reltuples::bigint END \
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
        AND (pg_catalog.has_table_privilege(c.oid, 'SELECT') \
             OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT')) \
        ORDER BY 1, 2";
    pub(super) const COLUMNS: &str = "SELECT n.nspname, c.relname, a.attname, a.attnum, \
        pg_catalog.format_type(a.atttypid, a.atttypmod), \
        CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END, \
        pg_catalog.pg_get_expr(d.adbin, d.adrelid) \
        FROM pg_catalog.pg_attribute a \
        JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
        LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
        AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
        ORDER BY 1, 2, 4";
    pub(super) const PRIMARY_KEYS: &str = "SELECT n.nspname, c.relname, a.attname, k.ord \
        FROM pg_catalog.pg_constraint con \
        JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
        CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord) \
        JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum \
        WHERE con.contype = 'p' ORDER BY 1, 2, 4";
    pub(super) const FOREIGN_KEYS: &str = "SELECT n.nspname, c.relname, con.conname, a.attname, k.ord, \
        rn.nspname, rc.relname, ra.attname \
        FROM pg_catalog.pg_constraint con \
        JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
        JOIN pg_catalog.pg_class rc ON rc.oid = con.confrelid \
        JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
        CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(attnum, refnum, ord) \
        JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum \
        JOIN pg_catalog.pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = k.refnum \
        WHERE con.contype = 'f' ORDER BY 1, 2, 3, 5";
    pub(super) const ENUMS: &str = "SELECT n.nspname, c.relname, a.attname, e.enumlabel, e.enumsortorder \
        FROM pg_catalog.pg_attribute a \
        JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
        JOIN pg_catalog.pg_enum e ON e.enumtypid = a.atttypid \
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
        ORDER BY 1, 2, 3, 5";
}

/// MySQL/MariaDB: the connection's database only (its schema name is left out).
static MYSQL_CATALOG: CatalogSql = CatalogSql {
    tables: "SELECT '', TABLE_NAME, IF(TABLE_TYPE = 'VIEW', 'VIEW', 'TABLE'), \
             IF(TABLE_TYPE = 'VIEW', NULL, TABLE_ROWS) \
             FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_TYPE IN ('BASE TABLE', 'VIEW', 'SYSTEM VERSIONED') ORDER BY 2",
    columns: "SELECT '', TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, \
              COLUMN_DEFAULT FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
              ORDER BY 2, 4",
    primary_keys: "SELECT '', TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION \
                   FROM INFORMATION_SCHEMA.KEY_COLUMN_USAGE \
                   WHERE TABLE_SCHEMA = DATABASE() AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY 2, 4",
    foreign_keys: "SELECT '', TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, ORDINAL_POSITION, \
                   IF(REFERENCED_TABLE_SCHEMA = DATABASE(), '', REFERENCED_TABLE_SCHEMA), \
                   REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME \
                   FROM INFORMATION_SCHEMA.KEY_COLUMN_USAGE \
                   WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL \
                   ORDER BY 2, 3, 5",
    // ENUM('a','b') labels are read from COLUMN_TYPE.
    enums: None,
};

static SQLSERVER_CATALOG: CatalogSql = CatalogSql {
    tables: "SELECT s.name, t.name, 'TABLE', \
             (SELECT SUM(p.rows) FROM sys.partitions p \
              WHERE p.object_id = t.object_id AND p.index_id IN (0, 1)) \
             FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id WHERE t.is_ms_shipped = 0 \
             UNION ALL \
             SELECT s.name, v.name, 'VIEW', NULL \
             FROM sys.views v JOIN sys.schemas s ON s.schema_id = v.schema_id WHERE v.is_ms_shipped = 0 \
             ORDER BY 1, 2",
    columns: "SELECT s.name, o.name, c.name, c.column_id, \
              TYPE_NAME(c.user_type_id) + CASE \
                WHEN TYPE_NAME(c.user_type_id) IN ('varchar', 'char', 'varbinary', 'binary') \
                  THEN '(' + IIF(c.max_length = -1, 'max', CAST(c.max_length AS varchar(10))) + ')' \
                WHEN TYPE_NAME(c.user_type_id) IN ('nvarchar', 'nchar') \
                  THEN '(' + IIF(c.max_length = -1, 'max', CAST(c.max_length / 2 AS varchar(10))) + ')' \
                WHEN TYPE_NAME(c.user_type_id) IN ('decimal', 'numeric') \
                  THEN '(' + CAST(c.precision AS varchar(3)) + ',' + CAST(c.scale AS varchar(3)) + ')' \
                ELSE '' END, \
              IIF(c.is_nullable = 1, 'YES', 'NO'), OBJECT_DEFINITION(c.default_object_id) \
              FROM sys.columns c JOIN sys.objects o ON o.object_id = c.object_id \
              JOIN sys.schemas s ON s.schema_id = o.schema_id \
              WHERE o.type IN ('U', 'V') AND o.is_ms_shipped = 0 ORDER BY 1, 2, 4",
    primary_keys: "SELECT s.name, t.name, c.name, ic.key_ordinal \
                   FROM sys.indexes i \
                   JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id \
                   JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id \
                   JOIN sys.tables t ON t.object_id = i.object_id \
                   JOIN sys.schemas s ON s.schema_id = t.schema_id \
                   WHERE i.is_primary_key = 1 ORDER BY 1, 2, 4",
    foreign_keys: "SELECT s.name, t.name, fk.name, c.name, fkc.constraint_column_id, rs.name, rt.name, rc.name \
                   FROM sys.foreign_keys fk \
                   JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id \
                   JOIN sys.tables t ON t.object_id = fk.parent_object_id \
                   JOIN sys.schemas s ON s.schema_id = t.schema_id \
                   JOIN sys.columns c ON c.object_id = fkc.parent_object_id AND c.column_id = fkc.parent_column_id \
                   JOIN sys.tables rt ON rt.object_id = fk.referenced_object_id \
                   JOIN sys.schemas rs ON rs.schema_id = rt.schema_id \
                   JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id \
                     AND rc.column_id = fkc.referenced_column_id \
                   ORDER BY 1, 2, 3, 5",
    enums: None,
};

/// Oracle 12c+: schemas of users that Oracle does not maintain itself.
static ORACLE_CATALOG: CatalogSql = CatalogSql {
    tables: "SELECT OWNER, TABLE_NAME, 'TABLE', NUM_ROWS FROM ALL_TABLES \
             WHERE OWNER NOT IN (SELECT USERNAME FROM ALL_USERS WHERE ORACLE_MAINTAINED = 'Y') \
             AND NESTED = 'NO' AND SECONDARY = 'N' \
             UNION ALL \
             SELECT OWNER, VIEW_NAME, 'VIEW', NULL FROM ALL_VIEWS \
             WHERE OWNER NOT IN (SELECT USERNAME FROM ALL_USERS WHERE ORACLE_MAINTAINED = 'Y') \
             ORDER BY 1, 2",
    columns: "SELECT OWNER, TABLE_NAME, COLUMN_NAME, COLUMN_ID, \
              DATA_TYPE || CASE \
                WHEN DATA_TYPE IN ('VARCHAR2', 'NVARCHAR2', 'CHAR', 'NCHAR') THEN '(' || CHAR_LENGTH || ')' \
                WHEN DATA_TYPE = 'RAW' THEN '(' || DATA_LENGTH || ')' \
                WHEN DATA_TYPE = 'NUMBER' AND DATA_PRECISION IS NOT NULL \
                  THEN '(' || DATA_PRECISION || ',' || DATA_SCALE || ')' \
                END, \
              NULLABLE, DATA_DEFAULT FROM ALL_TAB_COLUMNS \
              WHERE OWNER NOT IN (SELECT USERNAME FROM ALL_USERS WHERE ORACLE_MAINTAINED = 'Y') \
              ORDER BY 1, 2, 4",
    primary_keys: "SELECT c.OWNER, c.TABLE_NAME, cc.COLUMN_NAME, cc.POSITION \
                   FROM ALL_CONSTRAINTS c \
                   JOIN ALL_CONS_COLUMNS cc ON cc.OWNER = c.OWNER AND cc.CONSTRAINT_NAME = c.CONSTRAINT_NAME \
                   WHERE c.CONSTRAINT_TYPE = 'P' \
                   AND c.OWNER NOT IN (SELECT USERNAME FROM ALL_USERS WHERE ORACLE_MAINTAINED = 'Y') \
                   ORDER BY 1, 2, 4",
    foreign_keys: "SELECT c.OWNER, c.TABLE_NAME, c.CONSTRAINT_NAME, cc.COLUMN_NAME, cc.POSITION, \
                   r.OWNER, r.TABLE_NAME, rc.COLUMN_NAME \
                   FROM ALL_CONSTRAINTS c \
                   JOIN ALL_CONS_COLUMNS cc ON cc.OWNER = c.OWNER AND cc.CONSTRAINT_NAME = c.CONSTRAINT_NAME \
                   JOIN ALL_CONSTRAINTS r ON r.OWNER = c.R_OWNER AND r.CONSTRAINT_NAME = c.R_CONSTRAINT_NAME \
                   JOIN ALL_CONS_COLUMNS rc ON rc.OWNER = r.OWNER AND rc.CONSTRAINT_NAME = r.CONSTRAINT_NAME \
                     AND rc.POSITION = cc.POSITION \
                   WHERE c.CONSTRAINT_TYPE = 'R' \
                   AND c.OWNER NOT IN (SELECT USERNAME FROM ALL_USERS WHERE ORACLE_MAINTAINED = 'Y') \
                   ORDER BY 1, 2, 3, 5",
    enums: None,
};

/// SAP HANA: SYS.TABLES / SYS.TABLE_COLUMNS (+ views, M_TABLES for record counts).
static HANA_CATALOG: CatalogSql = CatalogSql {
    tables: "SELECT t.SCHEMA_NAME, t.TABLE_NAME, 'TABLE', m.RECORD_COUNT FROM SYS.TABLES t \
             LEFT JOIN SYS.M_TABLES m ON m.SCHEMA_NAME = t.SCHEMA_NAME AND m.TABLE_NAME = t.TABLE_NAME \
             WHERE t.IS_SYSTEM_TABLE = 'FALSE' AND t.SCHEMA_NAME NOT LIKE '\\_SYS%' ESCAPE '\\' \
             AND t.SCHEMA_NAME NOT IN ('SYS', 'SYSTEM', 'PUBLIC', 'UIS', 'HANA_XS_BASE', 'SAP_XS_LM') \
             UNION ALL \
             SELECT SCHEMA_NAME, VIEW_NAME, 'VIEW', NULL FROM SYS.VIEWS \
             WHERE SCHEMA_NAME NOT LIKE '\\_SYS%' ESCAPE '\\' \
             AND SCHEMA_NAME NOT IN ('SYS', 'SYSTEM', 'PUBLIC', 'UIS', 'HANA_XS_BASE', 'SAP_XS_LM') \
             ORDER BY 1, 2",
    columns: "SELECT SCHEMA_NAME, TABLE_NAME, COLUMN_NAME, POSITION, \
              DATA_TYPE_NAME || CASE WHEN DATA_TYPE_NAME IN ('DECIMAL') AND SCALE IS NOT NULL \
                THEN '(' || LENGTH || ',' || SCALE || ')' \
                WHEN DATA_TYPE_NAME IN ('VARCHAR', 'NVARCHAR', 'VARBINARY', 'ALPHANUM') \
                THEN '(' || LENGTH || ')' ELSE '' END, \
              IS_NULLABLE, DEFAULT_VALUE FROM SYS.TABLE_COLUMNS \
              WHERE SCHEMA_NAME NOT LIKE '\\_SYS%' ESCAPE '\\' \
              AND SCHEMA_NAME NOT IN ('SYS', 'SYSTEM', 'PUBLIC', 'UIS', 'HANA_XS_BASE', 'SAP_XS_LM') \
              UNION ALL \
              SELECT SCHEMA_NAME, VIEW_NAME, COLUMN_NAME, POSITION, DATA_TYPE_NAME, IS_NULLABLE, \
              DEFAULT_VALUE FROM SYS.VIEW_COLUMNS \
              WHERE SCHEMA_NAME NOT LIKE '\\_SYS%' ESCAPE '\\' \
              AND SCHEMA_NAME NOT IN ('SYS', 'SYSTEM', 'PUBLIC', 'UIS', 'HANA_XS_BASE', 'SAP_XS_LM') \
              ORDER BY 1, 2, 4",
    primary_keys: "SELECT SCHEMA_NAME, TABLE_NAME, COLUMN_NAME, POSITION FROM SYS.CONSTRAINTS \
                   WHERE IS_PRIMARY_KEY = 'TRUE' ORDER BY 1, 2, 4",
    foreign_keys: "SELECT SCHEMA_NAME, TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, POSITION, \
                   REFERENCED_SCHEMA_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME \
                   FROM SYS.REFERENTIAL_CONSTRAINTS ORDER BY 1, 2, 3, 5",
    enums: None,
};

/// SQLite through its ODBC driver: the PRAGMA table functions of the native driver, as SQL.
static SQLITE_CATALOG: CatalogSql = CatalogSql {
    tables: "SELECT '', m.name, upper(m.type), \
             CASE WHEN m.type = 'table' THEN coalesce(\
               (SELECT CAST(CASE WHEN instr(s.stat, ' ') > 0 THEN substr(s.stat, 1, instr(s.stat, ' ') - 1) \
                 ELSE s.stat END AS INTEGER) FROM sqlite_stat1 s WHERE s.tbl = m.name LIMIT 1), \
               NULL) END \
             FROM sqlite_master m WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY 2",
    columns: "SELECT '', m.name, p.name, p.cid + 1, p.type, \
              CASE WHEN p.\"notnull\" = 1 OR (p.pk = 1 AND upper(p.type) = 'INTEGER' \
                AND (SELECT count(*) FROM pragma_table_info(m.name) q WHERE q.pk > 0) = 1) \
                THEN 'NO' ELSE 'YES' END, p.dflt_value \
              FROM sqlite_master m JOIN pragma_table_info(m.name) p \
              WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 2, 4",
    primary_keys: "SELECT '', m.name, p.name, p.pk FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                   WHERE m.type = 'table' AND p.pk > 0 AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                   ORDER BY 2, 4",
    foreign_keys: "SELECT '', m.name, CAST(f.id AS TEXT), f.\"from\", f.seq + 1, '', f.\"table\", \
                   coalesce(f.\"to\", (SELECT p.name FROM pragma_table_info(f.\"table\") p \
                     WHERE p.pk = f.seq + 1)) \
                   FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f \
                   WHERE m.type = 'table' ORDER BY 2, 3, 5",
    enums: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dialect in OdbcDialect::ALL {
            assert_eq!(dialect.as_str().parse::<OdbcDialect>().unwrap(), dialect);
            let json = serde_json::to_string(&dialect).unwrap();
            assert_eq!(serde_json::from_str::<OdbcDialect>(&json).unwrap(), dialect);
        }
        assert_eq!("MSSQL".parse::<OdbcDialect>().unwrap(), OdbcDialect::SqlServer);
        assert!("db2".parse::<OdbcDialect>().is_err());
    }
}
