#!/usr/bin/env bash
# Real database servers for the drivers' integration tests, on loopback, in scratch dirs.
#
#   scripts/db-servers.sh start     install if missing, start PostgreSQL 15 and MariaDB, load the
#                                   sample ERP fixture, write ODBC ini files
#   scripts/db-servers.sh start mongo   only the MongoDB-compatible server
#   scripts/db-servers.sh env       print `export ...` lines for the tests (eval "$(... env)")
#   scripts/db-servers.sh restart pg|mysql|mongo   restart one server (same data), for pool-recovery tests
#   scripts/db-servers.sh stop      stop both servers by their pid files
#   scripts/db-servers.sh status
#
# Each server gets a fixture owner (read-write, loads the data) and a read-only user that the
# tests connect as. Both servers also speak TLS (a throw-away CA and a server certificate for
# the name `localhost` only, made with openssl into $DIR/tls; `env` exports the CA as
# MC_DB_CA) while still accepting plain connections. PostgreSQL has one more login,
# `mc_clear`, whose pg_hba method is `password` (the password travels in clear unless the
# link is TLS), for the cleartext-refusal tests. PostgreSQL's `mc_logged` is read-only like
# `mc_ro`, but every statement it runs is written to the server log (`log_statement = all`,
# set on the role by the superuser): the fault tests count executions there, reading the log
# as the owner through `pg_read_file` (granted below, data directory only). Ports and the directory can be overridden:
#   MC_DB_DIR (default /tmp/mc-db-servers), MC_PG_PORT (55432), MC_MY_PORT (53306).
# Servers run as the `postgres` / `mysql` system users (PostgreSQL refuses root); the data
# directories live under /tmp so those users can reach them. Passwords below are test-only.
#
# MongoDB: no `mongod` in Debian; SecantusDB (PyPI, a pre-release, pinned below) is a
# MongoDB-wire-compatible server on WiredTiger. It starts once without access control to create
# its users and load scripts/mongo-seed.py, then again with --auth (SCRAM-SHA-256) on MC_MONGO_PORT
# (57017). `env` exports MC_TEST_MONGO_URL (read-only login) and MC_TEST_MONGO_OWNER_URL.
set -euo pipefail

DIR=${MC_DB_DIR:-/tmp/mc-db-servers}
PG_PORT=${MC_PG_PORT:-55432}
MY_PORT=${MC_MY_PORT:-53306}
MO_PORT=${MC_MONGO_PORT:-57017}
SECANTUS=secantusdb==0.7.0b3
PG_BIN=${MC_PG_BIN:-/usr/lib/postgresql/15/bin}
DB=mc_test
OWNER=mc_owner
OWNER_PW=owner-test-pw
RO=mc_ro
RO_PW=ro-test-pw
CLEAR=mc_clear
CLEAR_PW=clear-test-pw
LOGGED=mc_logged
LOGGED_PW=logged-test-pw
ODBC_LIB=/usr/lib/x86_64-linux-gnu/odbc
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

PG_DATA=$DIR/pg
MY_DATA=$DIR/mysql
MO_DATA=$DIR/mongo
ODBC_DIR=$DIR/odbc
TLS_DIR=$DIR/tls

log() { echo "db-servers: $*" >&2; }

install_if_missing() {
    local missing=()
    [ -x "$PG_BIN/pg_ctl" ] || missing+=(postgresql)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    [ -f "$ODBC_LIB/psqlodbcw.so" ] || missing+=(odbc-postgresql)
    [ -f "$ODBC_LIB/libmaodbc.so" ] || missing+=(odbc-mariadb)
    [ -f "$ODBC_LIB/libsqlite3odbc.so" ] || missing+=(libsqliteodbc)
    command -v isql >/dev/null || missing+=(unixodbc)
    command -v openssl >/dev/null || missing+=(openssl)
    [ -f /usr/include/sql.h ] || missing+=(unixodbc-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}

# Runs a command as `user` (we are usually root; as that user already, run directly).
as_user() {
    local user=$1
    shift
    if [ "$(id -un)" = "$user" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}

fixture_sql() {
    # The same rows as drivers::fixture::create_sample_erp, written by the drivers crate itself.
    (cd "$ROOT" && cargo run -q -j2 -p drivers --example erp_sql -- "$@")
}

# A throw-away CA and a server certificate for `localhost` (DNS name only, no IP address, so
# verify-full to 127.0.0.1 is a name mismatch while verify-ca to it passes). Made once.
make_tls() {
    if [ -f "$TLS_DIR/server.pem" ] && [ -f "$TLS_DIR/ca.pem" ]; then return; fi
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    (
        cd "$TLS_DIR"
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout ca-key.pem -out ca.pem -days 3650 -subj "/CN=mini-connector test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            2>/dev/null
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout server-key.pem -out server.csr -subj "/CN=localhost" 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost" > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -out server.pem -days 3650 -extfile server.ext 2>/dev/null
        rm -f server.csr server.ext ca.srl
    )
    chmod 0755 "$TLS_DIR"
    chmod 0644 "$TLS_DIR/ca.pem" "$TLS_DIR/server.pem"
    chmod 0600 "$TLS_DIR/ca-key.pem" "$TLS_DIR/server-key.pem"
    log "TLS CA and server certificate made in $TLS_DIR"
}

# Copies the server key and certificates where a server user can read them (key 0600).
install_tls() {
    local dest=$1 owner=$2
    install -o "$owner" -g "$owner" -m 0600 "$TLS_DIR/server-key.pem" "$dest/server-key.pem"
    install -o "$owner" -g "$owner" -m 0644 "$TLS_DIR/server.pem" "$dest/server.pem"
    install -o "$owner" -g "$owner" -m 0644 "$TLS_DIR/ca.pem" "$dest/ca.pem"
}

pg_running() { [ -f "$PG_DATA/postmaster.pid" ] && kill -0 "$(head -1 "$PG_DATA/postmaster.pid")" 2>/dev/null; }
my_running() { [ -f "$MY_DATA/m.pid" ] && kill -0 "$(cat "$MY_DATA/m.pid")" 2>/dev/null; }

psql_admin() { as_user postgres psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DATA" -p "$PG_PORT" -U postgres "$@"; }
my_admin() { mariadb --no-defaults --socket="$MY_DATA/s.sock" -uroot "$@"; }

start_pg() {
    if pg_running; then log "postgres already running on $PG_PORT"; return; fi
    local fresh=0
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        fresh=1
        rm -rf "$PG_DATA"
        install -d -o postgres -g postgres -m 0700 "$PG_DATA"
        as_user postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    # Local socket: trust (admin only); TCP: passwords, so bad-password tests mean something.
    # `mc_clear` authenticates with `password` (cleartext), TLS or not. Written on every start
    # so data directories made by older versions of this script get the new line too.
    cat > "$PG_DATA/pg_hba.conf" <<EOF
local all all trust
host  all $CLEAR 127.0.0.1/32 password
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128      scram-sha-256
EOF
    chown postgres:postgres "$PG_DATA/pg_hba.conf"
    install_tls "$PG_DATA" postgres
    local tls="-c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server-key.pem -c ssl_ca_file=ca.pem"
    as_user postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -l "$PG_DATA/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA -c max_connections=200 $tls" start >/dev/null
    log "postgres up on 127.0.0.1:$PG_PORT (TLS on)"
    if [ $fresh = 1 ]; then
        psql_admin -d postgres <<EOF
CREATE ROLE $OWNER LOGIN PASSWORD '$OWNER_PW';
CREATE ROLE $RO LOGIN PASSWORD '$RO_PW';
CREATE DATABASE $DB OWNER $OWNER ENCODING 'UTF8' TEMPLATE template0;
EOF
        fixture_sql postgres > "$DIR/erp_pg.sql"
        PGPASSWORD=$OWNER_PW psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$OWNER" -d "$DB" \
            -f "$DIR/erp_pg.sql" >/dev/null
        PGPASSWORD=$OWNER_PW psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$OWNER" -d "$DB" <<EOF
GRANT USAGE ON SCHEMA public TO $RO;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO $RO;
GRANT USAGE ON SEQUENCE invoice_no_seq TO $RO;
EOF
        log "postgres fixture loaded into $DB"
    fi
    # The cleartext-password login (idempotent: older data directories lack it).
    psql_admin -d postgres <<EOF
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$CLEAR') THEN
    CREATE ROLE $CLEAR LOGIN PASSWORD '$CLEAR_PW';
  END IF;
END \$\$;
GRANT CONNECT ON DATABASE $DB TO $CLEAR;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$LOGGED') THEN
    CREATE ROLE $LOGGED LOGIN PASSWORD '$LOGGED_PW';
  END IF;
END \$\$;
ALTER ROLE $LOGGED SET log_statement = 'all';
GRANT CONNECT ON DATABASE $DB TO $LOGGED;
GRANT $RO TO $LOGGED;
GRANT pg_read_all_stats TO $OWNER;
EOF
    # Function grants live in each database's catalogue.
    psql_admin -d "$DB" <<EOF
GRANT EXECUTE ON FUNCTION pg_read_file(text, bigint, bigint) TO $OWNER;
GRANT EXECUTE ON FUNCTION pg_stat_file(text) TO $OWNER;
EOF
}

start_my() {
    if my_running; then log "mariadb already running on $MY_PORT"; return; fi
    local fresh=0
    if [ ! -d "$MY_DATA/mysql" ]; then
        fresh=1
        rm -rf "$MY_DATA"
        install -d -o mysql -g mysql -m 0750 "$MY_DATA"
        mariadb-install-db --no-defaults --user=mysql --datadir="$MY_DATA" --skip-test-db >/dev/null 2>&1
    fi
    # Started through `runuser`'s parent shell so it survives this script; logs in the data dir.
    install_tls "$MY_DATA" mysql
    nohup mariadbd --no-defaults --user=mysql --datadir="$MY_DATA" --bind-address=127.0.0.1 \
        --port="$MY_PORT" --socket="$MY_DATA/s.sock" --pid-file="$MY_DATA/m.pid" \
        --ssl-cert="$MY_DATA/server.pem" --ssl-key="$MY_DATA/server-key.pem" --ssl-ca="$MY_DATA/ca.pem" \
        --log-error="$MY_DATA/error.log" --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci --max-connections=300 >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
        if mariadb-admin --no-defaults --socket="$MY_DATA/s.sock" -uroot ping >/dev/null 2>&1; then break; fi
        sleep 0.1
    done
    mariadb-admin --no-defaults --socket="$MY_DATA/s.sock" -uroot ping >/dev/null
    log "mariadb up on 127.0.0.1:$MY_PORT (TLS on)"
    if [ $fresh = 1 ]; then
        my_admin <<EOF
CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER '$OWNER'@'127.0.0.1' IDENTIFIED BY '$OWNER_PW';
CREATE USER '$OWNER'@'localhost' IDENTIFIED BY '$OWNER_PW';
CREATE USER '$RO'@'127.0.0.1' IDENTIFIED BY '$RO_PW';
CREATE USER '$RO'@'localhost' IDENTIFIED BY '$RO_PW';
GRANT ALL ON $DB.* TO '$OWNER'@'127.0.0.1';
GRANT ALL ON $DB.* TO '$OWNER'@'localhost';
GRANT SELECT, SHOW VIEW ON $DB.* TO '$RO'@'127.0.0.1';
GRANT SELECT, SHOW VIEW ON $DB.* TO '$RO'@'localhost';
-- The read-only user runs KILL QUERY on its own connections only: no PROCESS/SUPER needed.
FLUSH PRIVILEGES;
EOF
        fixture_sql mysql > "$DIR/erp_mysql.sql"
        mariadb --no-defaults -h 127.0.0.1 -P "$MY_PORT" -u"$OWNER" -p"$OWNER_PW" \
            --default-character-set=utf8mb4 "$DB" < "$DIR/erp_mysql.sql" >/dev/null
        log "mariadb fixture loaded into $DB"
    fi
}

write_odbc() {
    mkdir -p "$ODBC_DIR"
    if [ ! -f "$DIR/erp.sqlite" ]; then
        fixture_sql sqlite "$DIR/erp.sqlite"
    fi
    cat > "$ODBC_DIR/odbcinst.ini" <<EOF
[PostgreSQL Unicode]
Description = psqlODBC (Unicode)
Driver      = $ODBC_LIB/psqlodbcw.so

[MariaDB]
Description = MariaDB Connector/ODBC
Driver      = $ODBC_LIB/libmaodbc.so

[SQLite3]
Description = SQLite3 ODBC
Driver      = $ODBC_LIB/libsqlite3odbc.so
EOF
    cat > "$ODBC_DIR/odbc.ini" <<EOF
[mc_pg]
Driver     = PostgreSQL Unicode
Servername = 127.0.0.1
Port       = $PG_PORT
Database   = $DB
UseServerSidePrepare = 1

[mc_maria]
Driver   = MariaDB
Server   = 127.0.0.1
Port     = $MY_PORT
Database = $DB
CharacterSet = utf8mb4

[mc_sqlite]
Driver   = SQLite3
Database = $DIR/erp.sqlite
EOF
}

print_env() {
    cat <<EOF
export MC_TEST_PG_URL='postgres://$RO:$RO_PW@127.0.0.1:$PG_PORT/$DB'
export MC_TEST_PG_OWNER_URL='postgres://$OWNER:$OWNER_PW@127.0.0.1:$PG_PORT/$DB'
export MC_TEST_MYSQL_URL='mysql://$RO:$RO_PW@127.0.0.1:$MY_PORT/$DB'
export MC_TEST_MYSQL_OWNER_URL='mysql://$OWNER:$OWNER_PW@127.0.0.1:$MY_PORT/$DB'
export MC_TEST_ODBC_PG='DSN=mc_pg;UID=$RO;PWD=$RO_PW'
export MC_TEST_ODBC_MYSQL='DSN=mc_maria;UID=$RO;PWD=$RO_PW'
export MC_TEST_ODBC_SQLITE='DSN=mc_sqlite'
export ODBCSYSINI='$ODBC_DIR'
export ODBCINI='$ODBC_DIR/odbc.ini'
export MC_DB_SERVERS='$ROOT/scripts/db-servers.sh'
export MC_DB_CA='$TLS_DIR/ca.pem'
export MC_TEST_PG_CLEAR_URL='postgres://$CLEAR:$CLEAR_PW@127.0.0.1:$PG_PORT/$DB'
export MC_TEST_PG_LOGGED_URL='postgres://$LOGGED:$LOGGED_PW@127.0.0.1:$PG_PORT/$DB'
export MC_TEST_MONGO_URL='mongodb://$RO:$RO_PW@127.0.0.1:$MO_PORT/$DB?authSource=admin'
export MC_TEST_MONGO_OWNER_URL='mongodb://$OWNER:$OWNER_PW@127.0.0.1:$MO_PORT/$DB?authSource=admin'
EOF
}

# Sends SIGNAL to PID and waits up to TRIES tenths of a second for it to exit.
stop_process() {
    local pid=$1 signal=$2 tries=$3
    kill "-$signal" "$pid"
    for _ in $(seq 1 "$tries"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

mo_running() { [ -f "$MO_DATA.pid" ] && kill -0 "$(cat "$MO_DATA.pid")" 2>/dev/null; }

# Starts SecantusDB on MO_PORT with the given extra flags and waits until it answers.
run_mongo() {
    local bin
    bin=$(command -v secantusd-py)
    nohup "$bin" --host 127.0.0.1 --port "$MO_PORT" --storage-path "$MO_DATA" --log-level WARNING "$@" \
        >>"$DIR/mongo.log" 2>&1 &
    echo $! >"$MO_DATA.pid"
    for _ in $(seq 1 150); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $MO_PORT), 0.2)" 2>/dev/null; then
            return 0
        fi
        mo_running || { log "SecantusDB exited; see $DIR/mongo.log"; tail -20 "$DIR/mongo.log" >&2; return 1; }
        sleep 0.2
    done
    log "SecantusDB did not answer on $MO_PORT"
    return 1
}

start_mongo() {
    command -v secantusd-py >/dev/null || python3 -m pip install -q --pre "$SECANTUS" >&2
    stop_mongo
    rm -rf "$MO_DATA"
    run_mongo
    python3 "$ROOT/scripts/mongo-seed.py" "$MO_PORT" "$DB" "$OWNER" "$OWNER_PW" "$RO" "$RO_PW"
    stop_mongo
    run_mongo --auth
    log "mongodb (SecantusDB) running on $MO_PORT"
}

stop_mongo() {
    if mo_running; then
        local pid
        pid=$(cat "$MO_DATA.pid")
        stop_process "$pid" TERM 100
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$MO_DATA.pid"
        log "mongodb stopped"
    fi
}

stop_pg() {
    if pg_running; then
        local pid
        pid=$(head -1 "$PG_DATA/postmaster.pid")
        stop_process "$pid" INT 100
        log "postgres stopped"
    fi
}

stop_my() {
    if my_running; then
        local pid
        pid=$(cat "$MY_DATA/m.pid")
        stop_process "$pid" TERM 150
        log "mariadb stopped"
    fi
}

case "${1:-}" in
    start)
        mkdir -p "$DIR"
        chmod 0755 "$DIR"
        if [ "${2:-}" = mongo ]; then start_mongo; exit 0; fi
        install_if_missing
        make_tls
        start_pg
        start_my
        start_mongo
        write_odbc
        ;;
    env) print_env ;;
    restart)
        case "${2:-}" in
            pg) stop_pg; make_tls; start_pg ;;
            mysql) stop_my; make_tls; start_my ;;
            mongo) stop_mongo; run_mongo --auth ;;
            *) echo "usage: $0 restart pg|mysql|mongo" >&2; exit 2 ;;
        esac
        ;;
    stop) stop_pg; stop_my; stop_mongo ;;
    status)
        pg_running && echo "postgres: running on $PG_PORT" || echo "postgres: stopped"
        my_running && echo "mariadb: running on $MY_PORT" || echo "mariadb: stopped"
        mo_running && echo "mongodb: running on $MO_PORT" || echo "mongodb: stopped"
        ;;
    *) echo "usage: $0 start|env|restart pg|mysql|mongo|stop|status" >&2; exit 2 ;;
esac
