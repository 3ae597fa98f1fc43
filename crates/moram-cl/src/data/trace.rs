//! TRACE data (protocol 4.1): `<dir>/<Task>/{train,eval,test}.json`, each a JSON array of objects
//! with string `prompt` and `answer`.

use super::data_error;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One prompt/answer pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The full instruction (no chat template).
    pub prompt: String,
    /// The expected answer.
    pub answer: String,
}

/// Reads one split file. Errors name the file, and the entry index for bad records.
pub fn load_split(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let what =
            if e.kind() == std::io::ErrorKind::NotFound { "missing split file".to_string() } else { e.to_string() };
        data_error(path, None, what)
    })?;
    parse_split(&text, path)
}

/// Parses the text of one split file (a JSON array of `{"prompt", "answer"}` objects); `path`
/// names it in errors.
pub fn parse_split(text: &str, path: &Path) -> Result<Vec<Example>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| data_error(path, None, format!("malformed JSON: {e}")))?;
    let items = value
        .as_array()
        .ok_or_else(|| data_error(path, None, "expected a JSON array of {\"prompt\", \"answer\"} objects"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |k: &str| {
                item.get(k)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| data_error(path, Some(format!("entry {i}")), format!("needs a string field `{k}`")))
            };
            Ok(Example { prompt: field("prompt")?, answer: field("answer")? })
        })
        .collect()
}

/// Writes `<dir>/<task>/{train,eval,test}.json` (the eval pairs serve as both eval and test).
pub fn write_task(dir: &Path, task: &str, train: &[Example], eval: &[Example]) -> Result<()> {
    let d = dir.join(task);
    std::fs::create_dir_all(&d).map_err(|e| crate::error::Error::io(&d, e))?;
    for (split, v) in [("train", train), ("eval", eval), ("test", eval)] {
        let p = d.join(format!("{split}.json"));
        let text = serde_json::to_string_pretty(v).map_err(|e| data_error(&p, None, e.to_string()))?;
        std::fs::write(&p, text).map_err(|e| crate::error::Error::io(&p, e))?;
    }
    Ok(())
}

/// Reads `<dir>/<task>/<split>.json`.
pub fn load_task_split(dir: &Path, task: &str, split: &str) -> Result<Vec<Example>> {
    load_split(&dir.join(task).join(format!("{split}.json")))
}

/// Checks `<dir>/<task>/<split>.json` for every task and split without stopping at the first
/// problem; returns one line per problem (missing folder or file, malformed JSON, bad entry, empty
/// split). Empty when everything loads.
pub fn check_dir(dir: &Path, tasks: &[String], splits: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if !dir.is_dir() {
        return vec![format!("{}: not a folder", dir.display())];
    }
    for task in tasks {
        let t = dir.join(task);
        if !t.is_dir() {
            problems.push(format!("{}: missing task folder", t.display()));
            continue;
        }
        for split in splits {
            match load_task_split(dir, task, split) {
                Ok(v) if v.is_empty() => {
                    problems.push(format!("{}: empty split", t.join(format!("{split}.json")).display()))
                }
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    problems
}
