//! Dialect profiles of engines no server here can run — SQL Server, Oracle, SAP HANA — tested
//! WITHOUT a server: their catalogue SQL (spec §4.2 names), that every catalogue and
//! privilege query is a single read-only statement in the dialect's parser, placeholders,
//! session statements and type-mapping tables. PostgreSQL, MySQL and SQLite profiles also
//! run against real servers in `suite`.

use drivers::{OdbcDialect, WireType, suggested_sql};

/// The gate's verdict, as every query text gets it before a driver runs it.
fn check_read_only_statement_in(sql: &str, dialect: OdbcDialect) -> Result<gate::Checked, gate::Rejection> {
    gate::check_with(sql, 1, dialect.gate_dialect(), &gate::Policy::default(), &gate::Limits::default())
}

#[test]
fn catalogue_sql_uses_the_catalogues_the_spec_names() {
    let sql = |d: OdbcDialect| {
        let c = d.catalog_sql().unwrap();
        format!("{} {} {} {}", c.tables, c.columns, c.primary_keys, c.foreign_keys)
    };
    let mssql = sql(OdbcDialect::SqlServer);
    for name in ["sys.tables", "sys.columns", "sys.foreign_keys", "sys.partitions"] {
        assert!(mssql.contains(name), "sql server: {name}");
    }
    let oracle = sql(OdbcDialect::Oracle);
    for name in ["ALL_TABLES", "ALL_TAB_COLUMNS", "ALL_CONSTRAINTS", "ALL_CONS_COLUMNS", "NUM_ROWS"] {
        assert!(oracle.contains(name), "oracle: {name}");
    }
    let hana = sql(OdbcDialect::Hana);
    for name in ["SYS.TABLES", "SYS.TABLE_COLUMNS", "SYS.CONSTRAINTS", "SYS.REFERENTIAL_CONSTRAINTS"] {
        assert!(hana.contains(name), "hana: {name}");
    }
    let mysql = sql(OdbcDialect::Mysql);
    for name in ["INFORMATION_SCHEMA.COLUMNS", "INFORMATION_SCHEMA.TABLES", "KEY_COLUMN_USAGE", "TABLE_ROWS"]
    {
        assert!(mysql.contains(name), "mysql: {name}");
    }
    let pg = sql(OdbcDialect::Postgres);
    for name in ["pg_catalog.pg_class", "reltuples", "pg_catalog.pg_constraint"] {
        assert!(pg.contains(name), "postgres: {name}");
    }
    assert!(OdbcDialect::Postgres.catalog_sql().unwrap().enums.unwrap().contains("pg_enum"));
    assert!(OdbcDialect::Generic.catalog_sql().is_none(), "generic ODBC uses catalog functions");
}

#[test]
fn catalogue_queries_are_single_read_only_statements_in_their_dialect() {
    // The drivers' own catalogue SQL does not pass through the gate (it never comes from the
    // cloud), and uses catalogue functions a console may not; every other rule must hold.
    for dialect in OdbcDialect::ALL {
        let Some(c) = dialect.catalog_sql() else { continue };
        for sql in [c.tables, c.columns, c.primary_keys, c.foreign_keys].into_iter().chain(c.enums) {
            match check_read_only_statement_in(sql, dialect) {
                Ok(_) => {}
                Err(e) if e.reason.contains("read-only allow-list") => {}
                // Catalogue views that show values (Oracle ALL_TAB_COLUMNS) are off limits to a
                // console, not to discovery.
                Err(e) if e.code == gate::RejectCode::SchemaAccessDenied => {}
                Err(e) => panic!("{dialect}: {e}\n{sql}"),
            }
        }
    }
}

#[test]
fn session_setup_ping_and_placeholders() {
    assert_eq!(OdbcDialect::Oracle.ping_sql(), "SELECT 1 FROM DUAL");
    assert_eq!(OdbcDialect::Hana.ping_sql(), "SELECT 1 FROM DUMMY");
    assert_eq!(OdbcDialect::SqlServer.ping_sql(), "SELECT 1");
    for dialect in [OdbcDialect::Oracle, OdbcDialect::Hana] {
        assert_eq!(dialect.odbc_begin_read_only(), Some("SET TRANSACTION READ ONLY"), "{dialect}");
    }
    assert!(OdbcDialect::Postgres.odbc_session_setup().iter().any(|s| s.contains("READ ONLY")));
    assert!(OdbcDialect::Mysql.odbc_session_setup().iter().any(|s| s.contains("READ ONLY")));
    assert!(OdbcDialect::Sqlite.odbc_session_setup().contains(&"PRAGMA query_only = ON"));
    for dialect in OdbcDialect::ALL {
        assert_eq!(dialect.placeholder(1), "?", "{dialect}: ODBC drivers translate `?` themselves");
        check_read_only_statement_in(dialect.ping_sql(), dialect).unwrap();
    }
    // Dialect-specific syntax parses in its own dialect.
    check_read_only_statement_in(
        "SELECT TOP 10 [name] FROM [dbo].[customers] WITH (NOLOCK)",
        OdbcDialect::SqlServer,
    )
    .unwrap();
    check_read_only_statement_in("SELECT `status` FROM `orders` LIMIT 5", OdbcDialect::Mysql).unwrap();
    check_read_only_statement_in("SELECT data->>'k', x::text FROM t WHERE id = $1", OdbcDialect::Postgres)
        .unwrap();
    check_read_only_statement_in("SELECT name FROM t WHERE id = ?", OdbcDialect::Postgres).unwrap();
    assert!(check_read_only_statement_in("DELETE FROM [dbo].[t]", OdbcDialect::SqlServer).is_err());
    assert!(check_read_only_statement_in("SELECT 1 FROM DUAL; DROP TABLE t", OdbcDialect::Oracle).is_err());
}

#[test]
fn type_mapping_tables() {
    use WireType::*;
    let cases: &[(OdbcDialect, &[(&str, WireType)])] = &[
        (
            OdbcDialect::SqlServer,
            &[
                ("int", Integer),
                ("bigint", Integer),
                ("bit", Boolean),
                ("decimal(18,2)", Decimal),
                ("money", Decimal),
                ("float", Float),
                ("nvarchar(max)", Text),
                ("varbinary(16)", Bytes),
                ("rowversion", Bytes),
                ("date", Date),
                ("time", Time),
                ("datetime2", Timestamp),
                ("datetimeoffset", TimestampTz),
                ("uniqueidentifier", Uuid),
                ("sql_variant", Unknown),
            ],
        ),
        (
            OdbcDialect::Oracle,
            &[
                ("NUMBER(10,0)", Integer),
                ("NUMBER(19,0)", Decimal),
                ("NUMBER(12,2)", Decimal),
                ("NUMBER", Decimal),
                ("BINARY_DOUBLE", Float),
                ("VARCHAR2(100)", Text),
                ("CLOB", Text),
                ("RAW(16)", Bytes),
                ("BLOB", Bytes),
                ("DATE", Timestamp),
                ("TIMESTAMP(6)", Timestamp),
                ("TIMESTAMP(6) WITH TIME ZONE", TimestampTz),
                ("TIMESTAMP(6) WITH LOCAL TIME ZONE", TimestampTz),
                ("INTERVAL DAY(2) TO SECOND(6)", Text),
                ("JSON", Json),
            ],
        ),
        (
            OdbcDialect::Hana,
            &[
                ("INTEGER", Integer),
                ("BIGINT", Integer),
                ("DECIMAL(15,2)", Decimal),
                ("SMALLDECIMAL", Decimal),
                ("DOUBLE", Float),
                ("BOOLEAN", Boolean),
                ("NVARCHAR(50)", Text),
                ("ALPHANUM(10)", Text),
                ("VARBINARY(16)", Bytes),
                ("DATE", Date),
                ("TIME", Time),
                ("SECONDDATE", Timestamp),
                ("TIMESTAMP", Timestamp),
            ],
        ),
        (
            OdbcDialect::Postgres,
            &[
                ("integer", Integer),
                ("numeric(12,2)", Decimal),
                ("double precision", Float),
                ("boolean", Boolean),
                ("character varying(20)", Text),
                ("bytea", Bytes),
                ("timestamp without time zone", Timestamp),
                ("timestamp(3) with time zone", TimestampTz),
                ("time with time zone", Time),
                ("uuid", Uuid),
                ("jsonb", Json),
                ("integer[]", Json),
            ],
        ),
        (
            OdbcDialect::Mysql,
            &[
                ("int(11)", Integer),
                ("tinyint(1)", Boolean),
                ("bigint(20) unsigned", Decimal),
                ("decimal(12,2)", Decimal),
                ("double", Float),
                ("varchar(20)", Text),
                ("enum('a','b')", Text),
                ("blob", Bytes),
                ("datetime", Timestamp),
                ("timestamp", TimestampTz),
                ("json", Json),
            ],
        ),
    ];
    for (dialect, table) in cases {
        for (declared, wire) in *table {
            assert_eq!(dialect.wire_type(declared), *wire, "{dialect}: {declared}");
        }
    }
}

#[test]
fn privilege_advice_per_dialect() {
    assert!(suggested_sql(OdbcDialect::SqlServer, "erp").contains("ALTER ROLE db_datareader ADD MEMBER"));
    assert!(suggested_sql(OdbcDialect::Oracle, "ERP").contains("GRANT CREATE SESSION"));
    assert!(suggested_sql(OdbcDialect::Hana, "ERP").contains("GRANT SELECT ON SCHEMA \"ERP\""));
}
