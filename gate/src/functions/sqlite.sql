-- The built-in SQLite functions the gate allows: the bundled library's functions (rusqlite
-- `bundled`, as the agent ships it), minus the reviewed deny set. Run by
-- scripts/gen-function-allowlist.sh through `cargo run -p gate --example sqlite_functions`
-- (writes sqlite.txt) and by the gate's catalogue test (compares). One lower-case name per row.
SELECT DISTINCT lower(name) AS name
FROM pragma_function_list
WHERE lower(name) GLOB '[a-z_]*'
  AND lower(name) NOT GLOB '*[^a-z0-9_]*'
  AND lower(name) NOT IN (
    -- loads code into the server, or registers a tokenizer by pointer
    'load_extension', 'fts3_tokenizer',
    -- server files (CLI/extension functions, in case a build has them)
    'readfile', 'writefile', 'edit', 'fsdir', 'zipfile',
    -- describe earlier statements of a pooled connection
    'changes', 'total_changes', 'last_insert_rowid',
    -- writes to the error log
    'sqlite_log',
    -- FTS auxiliary functions that write (optimize merges the index)
    'optimize'
  )
ORDER BY 1;
