-- The built-in MariaDB functions the gate allows: the native functions the server lists in
-- information_schema.SQL_FUNCTIONS (readable by any user), minus the reviewed deny set.
-- Functions parsed as keywords (DAY, IF, LEFT, ROW_NUMBER, ST_* ...) are not listed there; the
-- reviewed ones are added by hand in gate/src/functions/mod.rs (MYSQL_EXTRA).
-- Run by scripts/gen-function-allowlist.sh (writes mysql.txt) and by the gate's catalogue test
-- (compares). One lower-case name per row, sorted, no duplicates.
SELECT DISTINCT LOWER(FUNCTION) AS name
FROM information_schema.SQL_FUNCTIONS
WHERE LOWER(FUNCTION) NOT IN (
    -- sleeps and waits
    'benchmark', 'sleep', 'master_pos_wait', 'master_gtid_wait', 'wsrep_sync_wait_upto_gtid',
    -- user locks
    'get_lock', 'release_lock', 'release_all_locks', 'is_free_lock', 'is_used_lock',
    -- server files
    'load_file',
    -- session state: LAST_INSERT_ID(expr) sets it; ROW_COUNT/FOUND_ROWS describe earlier
    -- statements of a pooled session
    'last_insert_id', 'row_count', 'found_rows',
    -- replication state
    'binlog_gtid_pos', 'wsrep_last_seen_gtid', 'wsrep_last_written_gtid',
    -- password hashing functions and obsolete/weak crypto (no side effect, but refused so that
    -- the cloud does not brute-force through the server)
    'password', 'old_password', 'encrypt', 'des_encrypt', 'des_decrypt', 'encode', 'decode',
    -- uuid_short advances a server-wide counter
    'uuid_short',
    -- NAME_CONST is meant for stored-procedure replication only
    'name_const'
  )
ORDER BY 1;
