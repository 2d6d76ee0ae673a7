//! Concurrent writers (threads with their own handles, one shared handle, separate processes)
//! all land in one valid file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use vault::Vault;

use crate::support::{TempDir, open};

const PER_WRITER: usize = 10;

fn write_ids(vault: &Vault, prefix: &str) {
    for i in 0..PER_WRITER {
        let id = format!("{prefix}-{i}");
        vault.put(&id, format!("secret of {id}").as_bytes()).unwrap();
    }
}

fn assert_all_present(dir: &Path, prefixes: &[String]) {
    let vault = open(dir).unwrap();
    let ids = vault.ids().unwrap();
    assert_eq!(ids.len(), prefixes.len() * PER_WRITER, "{ids:?}");
    for prefix in prefixes {
        for i in 0..PER_WRITER {
            let id = format!("{prefix}-{i}");
            assert_eq!(vault.get(&id).unwrap().expose(), format!("secret of {id}").as_bytes());
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn threads_with_their_own_handles_on_a_fresh_directory() {
    let tmp = TempDir::new("threads");
    let dir = tmp.vault_dir();
    let prefixes: Vec<String> = (0..6).map(|t| format!("thread{t}")).collect();
    let start = Arc::new(Barrier::new(prefixes.len()));
    let workers: Vec<_> = prefixes
        .iter()
        .map(|prefix| {
            let (dir, prefix, start) = (dir.clone(), prefix.clone(), start.clone());
            // All open at once: they must agree on one install id and one salt.
            thread::spawn(move || {
                start.wait();
                write_ids(&open(&dir).unwrap(), &prefix);
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_all_present(&dir, &prefixes);
}

#[test]
fn threads_sharing_one_handle() {
    let tmp = TempDir::new("shared");
    let dir = tmp.vault_dir();
    let vault = Arc::new(open(&dir).unwrap());
    let prefixes: Vec<String> = (0..4).map(|t| format!("shared{t}")).collect();
    thread::scope(|s| {
        for prefix in &prefixes {
            let vault = &vault;
            s.spawn(move || write_ids(vault, prefix));
        }
    });
    assert_all_present(&dir, &prefixes);
}

/// Child half of the multi-process test; a no-op unless the parent set the variables.
#[test]
fn child_writer() {
    let (Some(dir), Some(prefix)) =
        (std::env::var_os("VAULT_TEST_CHILD_DIR"), std::env::var("VAULT_TEST_CHILD_PREFIX").ok())
    else {
        return;
    };
    write_ids(&open(Path::new(&dir)).unwrap(), &prefix);
}

#[test]
fn separate_processes() {
    let tmp = TempDir::new("processes");
    let dir = tmp.vault_dir();
    let prefixes: Vec<String> = (0..4).map(|p| format!("process{p}")).collect();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = prefixes
        .iter()
        .map(|prefix| {
            Command::new(&exe)
                .args(["--exact", "concurrency::child_writer", "--test-threads=1", "--quiet"])
                .env("VAULT_TEST_CHILD_DIR", &dir)
                .env("VAULT_TEST_CHILD_PREFIX", prefix)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_all_present(&dir, &prefixes);
}
