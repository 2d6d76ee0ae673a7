//! Runs every case of `tests/corpus/*.jsonl` (format in `tests/corpus/README.md`) and prints
//! every mismatch before failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gate::{Dialect, Policy, RejectCode, SCHEMA_DENIED_REASON, check};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// A dialect name, or `*` for every dialect.
    d: String,
    /// `allow` or a rejection code.
    expect: String,
    sql: String,
    /// Name of a policy in `policies.json`.
    #[serde(default)]
    policy: Option<String>,
    /// A substring the rejection reason must contain.
    #[serde(default)]
    reason: Option<String>,
    /// What the case is about (for humans).
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("corpus")
}

pub fn policies() -> BTreeMap<String, Policy> {
    let text = std::fs::read_to_string(corpus_dir().join("policies.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every (file, line, dialect, case) of the corpus.
pub fn load() -> Vec<(String, usize, Dialect, CaseRef)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let case: Case =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: bad case: {e}", n + 1));
            let dialects: Vec<Dialect> = if case.d == "*" {
                Dialect::ALL.to_vec()
            } else {
                case.d
                    .split(',')
                    .map(|d| d.parse().unwrap_or_else(|e| panic!("{name}:{}: {e}", n + 1)))
                    .collect()
            };
            let case = std::rc::Rc::new(case);
            for d in dialects {
                out.push((name.clone(), n + 1, d, CaseRef(case.clone())));
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct CaseRef(std::rc::Rc<Case>);

impl CaseRef {
    pub fn sql(&self) -> &str {
        &self.0.sql
    }
}

#[test]
fn corpus_cases_all_pass() {
    let policies = policies();
    let cases = load();
    let mut failures = Vec::new();
    let (mut allow, mut reject) = (0, 0);
    let mut lines = std::collections::BTreeSet::new();
    for (file, line, dialect, case) in &cases {
        lines.insert((file.clone(), *line));
        let c = &case.0;
        let policy = match &c.policy {
            Some(name) => policies.get(name).unwrap_or_else(|| panic!("{file}:{line}: no policy {name}")),
            None => &Policy::default(),
        };
        let got = check(&c.sql, *dialect, policy);
        let got_code = match &got {
            Ok(_) => "allow".to_owned(),
            Err(r) => r.code.as_str().to_owned(),
        };
        if c.expect == "allow" {
            allow += 1
        } else {
            reject += 1
        }
        let mut problem = None;
        if got_code != c.expect {
            problem = Some(format!("expected {}, got {}", c.expect, describe(&got)));
        } else if let (Some(want), Err(r)) = (&c.reason, &got)
            && !r.reason.contains(want.as_str())
        {
            problem = Some(format!("reason {:?} does not contain {want:?}", r.reason));
        } else if let Err(r) = &got
            && r.code == RejectCode::SchemaAccessDenied
            && r.reason != SCHEMA_DENIED_REASON
        {
            problem = Some(format!("privacy reason must not vary: {:?}", r.reason));
        }
        if let Some(p) = problem {
            failures.push(format!("{file}:{line} [{dialect}] {:?}\n    {p}", c.sql));
        }
    }
    println!(
        "corpus: {} cases ({} lines), {allow} expected allow, {reject} expected reject",
        cases.len(),
        lines.len()
    );
    for f in &failures {
        println!("MISMATCH {f}");
    }
    assert!(lines.len() >= 300, "the corpus must have at least 300 cases, has {}", lines.len());
    assert!(failures.is_empty(), "{} of {} corpus cases failed (listed above)", failures.len(), cases.len());
}

fn describe(got: &Result<gate::Checked, gate::Rejection>) -> String {
    match got {
        Ok(c) => format!("allow (tables {:?})", c.tables),
        Err(r) => r.to_string(),
    }
}
