-- The built-in PostgreSQL functions the gate allows: everything in pg_catalog that is a plain,
-- aggregate or window function, immutable or stable (or volatile but reviewed harmless), and
-- callable from SQL (no `internal`, `cstring`, trigger or handler types), minus the reviewed
-- deny set. Run by scripts/gen-function-allowlist.sh (writes postgres.txt) and by the gate's
-- catalogue test (compares). One lower-case name per row, sorted, no duplicates.
SELECT DISTINCT lower(p.proname) AS name
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace
  AND p.prokind IN ('f', 'a', 'w')
  AND (
    p.provolatile IN ('i', 's')
    -- Volatile, reviewed: no side effects (random values, the clock, sizes and status reads).
    OR p.proname IN (
      'random', 'clock_timestamp', 'timeofday', 'gen_random_uuid',
      'pg_database_size', 'pg_relation_size', 'pg_total_relation_size', 'pg_table_size',
      'pg_indexes_size', 'pg_tablespace_size', 'pg_is_in_recovery', 'pg_jit_available',
      'pg_partition_tree', 'pg_partition_ancestors', 'pg_blocking_pids'
    )
  )
  AND NOT EXISTS (
    SELECT 1
    FROM unnest(p.proargtypes::oid[] || p.prorettype) AS t(oid)
    WHERE t.oid IN (
      'internal'::regtype, 'cstring'::regtype, 'trigger'::regtype, 'event_trigger'::regtype,
      'language_handler'::regtype, 'fdw_handler'::regtype, 'index_am_handler'::regtype,
      'tsm_handler'::regtype, 'table_am_handler'::regtype
    )
  )
  -- Reviewed deny set (gate/src/deny.rs): large objects, advisory locks, signals, server files,
  -- settings, notifications, sequences and transaction ids, replication/WAL/backup, SQL run
  -- from text or tables read by name, sleeps, statistics and index maintenance.
  AND p.proname !~ '^(lo_|pg_advisory_|pg_try_advisory_|pg_ls_|pg_file_|pg_logical_|pg_replication_origin_|pg_create_|pg_copy_|pg_wal_replay_|pg_backup_|pg_stat_reset|pg_sleep|brin_|dblink|query_to_xml|table_to_xml|cursor_to_xml|schema_to_xml|database_to_xml|pg_event_trigger_)'
  AND p.proname NOT IN (
    'loread', 'lowrite', 'pg_read_file', 'pg_read_binary_file', 'pg_stat_file', 'set_config',
    'setseed', 'nextval', 'setval', 'currval', 'lastval', 'txid_current', 'pg_current_xact_id',
    'pg_notify', 'pg_cancel_backend', 'pg_terminate_backend', 'pg_reload_conf',
    'pg_rotate_logfile', 'pg_promote', 'pg_switch_wal', 'pg_drop_replication_slot',
    'pg_replication_slot_advance', 'pg_import_system_collations', 'gin_clean_pending_list',
    'pg_log_backend_memory_contexts', 'pg_extension_config_dump', 'ts_stat', 'ts_rewrite'
  )
ORDER BY 1;
