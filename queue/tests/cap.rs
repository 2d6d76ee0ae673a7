//! The size cap (oldest-first purge of finished, acknowledged work; `Full` when only
//! unfinished work is left), the 80 % warning, and a really full disk.

use std::path::{Path, PathBuf};

use queue::{QueueError, Receipt, State, Store, StoreConfig};

use crate::support::{TempDir, answer, answered, cmd, frame, integrity, open};

const KIB: usize = 1024;

fn capped(path: &Path, max_bytes: u64, warn_ratio: f64) -> Store {
    Store::open(path, StoreConfig { max_bytes, warn_ratio, ..StoreConfig::default() }).unwrap()
}

#[test]
fn over_the_cap_old_acknowledged_answers_go_first_and_unfinished_work_never() {
    let dir = TempDir::new("cap");
    let cap = 2 << 20;
    let mut store = capped(&dir.db(), cap, 0.8);
    // 40 answered, acknowledged commands of 100 KiB each: twice the cap.
    for i in 0..40 {
        let id = format!("done-{i}");
        let f = frame(&id, 100);
        store.receive(&cmd(&id, Some(&id), &f)).unwrap();
        store.start(&id).unwrap();
        let a = answer(&id, 100 * KIB);
        store.finish(&id, &answered(&a)).unwrap();
        store.acknowledge(&id).unwrap();
        let usage = store.usage().unwrap();
        assert!(usage.used_bytes <= cap, "after {i}: {usage:?}");
    }
    let counts = store.counts().unwrap();
    assert!(counts.purged >= 20, "{counts:?}");
    assert_eq!(counts.answered, 40, "metadata is kept");
    // The oldest went first, the newest is whole.
    let oldest = store.get("done-0").unwrap().unwrap();
    assert!(oldest.purged && oldest.answer_json.is_none() && oldest.frame_json.is_none());
    assert_eq!(
        (oldest.row_count, oldest.code.as_deref(), oldest.result_bytes.is_some()),
        (Some(3), Some("ok"), true)
    );
    assert!(!store.get("done-39").unwrap().unwrap().purged);
    // A repeat of a purged command is known, without its body.
    match store.receive(&cmd("late", Some("done-0"), "{}")).unwrap() {
        Receipt::Known(e) => assert!(e.purged && e.answer_json.is_none() && e.state == State::Answered),
        other => panic!("{other:?}"),
    }

    // Unfinished work and unacknowledged answers are never purged: fill with them until Full.
    let mut kept = Vec::new();
    let full = loop {
        let id = format!("open-{}", kept.len());
        let f = frame(&id, 100 * KIB);
        match store.receive(&cmd(&id, None, &f)) {
            Ok(Receipt::New) => {}
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
        match kept.len() % 3 {
            0 => {}
            1 => {
                store.start(&id).unwrap();
            }
            _ => {
                store.start(&id).unwrap();
                store.finish(&id, &answered(&answer(&id, 10))).unwrap();
            }
        }
        kept.push(id);
        assert!(kept.len() < 100, "never Full");
    };
    match full {
        QueueError::Full { used_bytes, cap_bytes } => {
            assert_eq!(cap_bytes, cap);
            assert!(used_bytes <= cap);
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(kept.len() >= 10, "only {} unfinished commands fit", kept.len());
    for (i, id) in kept.iter().enumerate() {
        let c = store.get(id).unwrap().unwrap();
        assert!(!c.purged && c.frame_json.is_some(), "{id} was purged");
        let want = [State::Received, State::Running, State::Answered][i % 3];
        assert_eq!(c.state, want);
    }
    assert!(
        store.get(&format!("open-{}", kept.len())).unwrap().is_none(),
        "a refused command leaves nothing"
    );
    assert_eq!(store.counts().unwrap().purged, 40, "every acknowledged answer was purged before Full");
    assert!(store.verify_audit().unwrap().ok);
    assert_eq!(store.integrity_check().unwrap(), "ok");

    // An answer is always stored, even over the cap (its command was accepted).
    let running = &kept[1];
    store.finish(running, &answered(&answer(running, 300 * KIB))).unwrap();
    assert!(store.get(running).unwrap().unwrap().answer_json.is_some());
}

#[test]
fn usage_warns_at_80_percent() {
    let dir = TempDir::new("warn");
    let cap = 1 << 20;
    let mut store = capped(&dir.db(), cap, 0.8);
    let first = store.usage().unwrap();
    assert!(!first.warn && first.ratio < 0.8, "{first:?}");
    let (mut saw_quiet, mut saw_warn) = (false, false);
    for i in 0..100 {
        let id = format!("c{i}");
        let f = frame(&id, 40 * KIB);
        if store.receive(&cmd(&id, None, &f)).is_err() {
            break;
        }
        let u = store.usage().unwrap();
        assert_eq!(u.warn, u.ratio >= 0.8, "{u:?}");
        assert_eq!(u.cap_bytes, cap);
        assert!(u.disk_bytes > 0);
        saw_quiet |= !u.warn;
        saw_warn |= u.warn;
    }
    assert!(saw_quiet && saw_warn, "the warning came on between empty and full");
}

#[test]
fn purge_brings_the_queue_under_the_warning_line() {
    let dir = TempDir::new("purge");
    let cap = 8 << 20;
    let mut store = capped(&dir.db(), cap, 0.25);
    for i in 0..40 {
        let id = format!("c{i}");
        store.receive(&cmd(&id, None, &frame(&id, 10))).unwrap();
        store.start(&id).unwrap();
        store.finish(&id, &answered(&answer(&id, 100 * KIB))).unwrap();
        // Every 4th stays unacknowledged: never purged.
        if i % 4 != 0 {
            store.acknowledge(&id).unwrap();
        }
    }
    assert!(store.usage().unwrap().warn);
    let report = store.purge().unwrap();
    assert!(report.bodies_purged > 0, "{report:?}");
    assert!(report.used_after <= cap / 4, "{report:?}");
    assert!(report.used_after < report.used_before);
    assert!(!store.usage().unwrap().warn);
    for i in (0..40).step_by(4) {
        assert!(!store.get(&format!("c{i}")).unwrap().unwrap().purged, "unacknowledged c{i} was purged");
    }
    assert_eq!(store.unacknowledged().unwrap().len(), 10);
    let last = store.audit_records(None).unwrap().pop().unwrap();
    assert_eq!(last.event, "purged");
    assert_eq!(store.purge().unwrap().bodies_purged, 0, "nothing more to do");
    assert!(store.verify_audit().unwrap().ok);
}

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn small_tmpfs(dir: &TempDir) -> Result<Tmpfs, String> {
    #[cfg(unix)]
    {
        let mount_point = dir.path().join("small");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
            .arg(&mount_point)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(mount_point))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Err("no tmpfs on this platform".into())
    }
}

#[test]
fn a_full_disk_is_disk_full_and_leaves_nothing_corrupt() {
    let dir = TempDir::new("diskfull");
    let tmpfs = match small_tmpfs(&dir) {
        Ok(t) => t,
        Err(why) => {
            // Needs root (CAP_SYS_ADMIN) to mount a 2 MiB tmpfs.
            eprintln!("SKIPPED a_full_disk_is_disk_full_and_leaves_nothing_corrupt: {why}");
            return;
        }
    };
    let path = tmpfs.0.join("queue.db");
    let mut store = open(&path);
    let mut stored = Vec::new();
    let error = loop {
        let id = format!("c{}", stored.len());
        let f = frame(&id, 64 * KIB);
        match store.receive(&cmd(&id, None, &f)) {
            Ok(_) => stored.push(id),
            Err(e) => break e,
        }
        assert!(stored.len() < 200, "a 2 MiB disk never filled");
    };
    assert!(error.is_disk_full(), "expected DiskFull, got {error:?}");
    assert!(error.to_string().contains("disk full"));
    assert!(!stored.is_empty());
    // Answers fail the same way and leave the command as it was.
    let id = stored[0].clone();
    store.start(&id).ok();
    let before = store.get(&id).unwrap().unwrap().state;
    if let Err(e) = store.finish(&id, &answered(&answer(&id, 512 * KIB))) {
        assert!(e.is_disk_full(), "{e:?}");
        assert_eq!(store.get(&id).unwrap().unwrap().state, before);
    }
    drop(store);

    let store = open(&path);
    assert_eq!(integrity(&path), "ok");
    for id in &stored {
        assert!(store.get(id).unwrap().is_some(), "{id} was lost");
    }
    assert!(store.verify_audit().unwrap().ok);
    drop(store);
    drop(tmpfs);
}

#[test]
fn old_metadata_goes_only_when_that_makes_room_and_the_audit_log_never() {
    let dir = TempDir::new("rows");
    let cap = 256 << 10;
    let mut store = capped(&dir.db(), cap, 0.8);
    let pad = "p".repeat(400);
    let mut accepted = 0u64;
    let mut first_gone_at = None;
    let full = loop {
        let id = format!("c{accepted}");
        let f = format!(r#"{{"id":"{id}","pad":"{pad}"}}"#);
        match store.receive(&cmd(&id, Some(&id), &f)) {
            Ok(_) => {}
            Err(e) => break e,
        }
        accepted += 1;
        store.start(&id).unwrap();
        store.finish(&id, &answered(&answer(&id, 400))).unwrap();
        store.acknowledge(&id).unwrap();
        if first_gone_at.is_none() && store.get("c0").unwrap().is_none() {
            first_gone_at = Some(accepted);
        }
        assert!(accepted < 20_000, "never Full");
    };
    assert!(matches!(full, QueueError::Full { .. }), "{full:?}");
    let gone_at = first_gone_at.expect("old metadata rows were deleted to make room");
    assert!(gone_at < accepted, "rows went before the log filled ({gone_at} of {accepted})");
    // Full: the audit log (never purged) fills the cap. It is whole: 3 records per command.
    let report = store.verify_audit().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 3 * accepted);
    // The refused receive deleted no metadata in vain.
    let before = store.counts().unwrap().answered;
    assert!(store.receive(&cmd("again", None, "{}")).is_err());
    assert_eq!(store.counts().unwrap().answered, before);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}
