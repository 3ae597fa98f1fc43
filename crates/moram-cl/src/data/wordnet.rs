//! The parts of WordNet 3.0 (Princeton University; Debian `wordnet-base`, fetched by
//! `cargo xtask setup`) the demo's tasks read: nouns with the lexicographer file of their most
//! frequent sense, and irregular verb forms with their base form.
//!
//! File formats (WordNet's `wndb(5)`): `index.<pos>` lines are `lemma pos synset_cnt p_cnt
//! [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...`, synsets ordered by frequency;
//! `data.<pos>` lines are `synset_offset lex_filenum ss_type w_cnt word lex_id ... | gloss`;
//! `<pos>.exc` lines are `inflected_form base_form...`. License lines start with two spaces.

use crate::error::{Error, Result};

/// A malformed WordNet file, at `line` when known.
fn bad(path: &Path, line: Option<usize>, message: impl Into<String>) -> Error {
    Error::Data { path: path.into(), entry: line.map(|n| format!("line {n}")), message: message.into() }
}
use std::collections::HashMap;
use std::path::Path;

/// One `index.<pos>` entry: how many of its senses are tagged in the semantic concordance (a
/// frequency proxy) and its synsets' offsets, most frequent first.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// `tagsense_cnt`.
    pub tagged_senses: usize,
    /// `synset_offset`s.
    pub offsets: Vec<String>,
}

fn lines(path: &Path) -> Result<impl Iterator<Item = (usize, String)>> {
    // WordNet's files are Latin-1; the lemmas the demo keeps are ASCII.
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text: String = bytes.iter().map(|&b| b as char).collect();
    let owned: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with("  ") && !l.is_empty())
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect();
    Ok(owned.into_iter())
}

fn field<'a>(f: &[&'a str], i: usize, path: &Path, line: usize, what: &str) -> Result<&'a str> {
    match f.get(i) {
        Some(v) => Ok(v),
        None => Err(bad(path, Some(line), format!("missing {what}"))),
    }
}

/// Reads `index.<pos>`: lemma -> entry.
pub fn read_index(path: &Path) -> Result<HashMap<String, IndexEntry>> {
    let mut out = HashMap::new();
    for (n, line) in lines(path)? {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize, what: &str| -> Result<usize> {
            let v = field(&f, i, path, n, what)?;
            v.parse().map_err(|_| bad(path, Some(n), format!("{what} `{v}` is not a number")))
        };
        let p_cnt = num(3, "p_cnt")?;
        let synsets = num(4 + p_cnt, "sense_cnt")?;
        let tagged_senses = num(5 + p_cnt, "tagsense_cnt")?;
        let offsets: Vec<String> = f.iter().skip(6 + p_cnt).map(|s| s.to_string()).collect();
        if offsets.len() != synsets {
            return Err(bad(path, Some(n), format!("{synsets} senses announced, {} offsets found", offsets.len())));
        }
        out.insert(f[0].to_string(), IndexEntry { tagged_senses, offsets });
    }
    if out.is_empty() {
        return Err(bad(path, None, "no index entry"));
    }
    Ok(out)
}

/// Reads `data.<pos>`: synset offset -> lexicographer file number (`lex_filenum`).
pub fn read_lexfiles(path: &Path) -> Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    for (n, line) in lines(path)? {
        let mut f = line.split_whitespace();
        let (Some(offset), Some(lex)) = (f.next(), f.next()) else {
            return Err(bad(path, Some(n), "expected `offset lex_filenum ...`"));
        };
        let lex: u32 = lex.parse().map_err(|_| bad(path, Some(n), format!("lex_filenum `{lex}` is not a number")))?;
        out.insert(offset.to_string(), lex);
    }
    Ok(out)
}

/// Reads `<pos>.exc`: `(inflected form, base form)` pairs, in file order (the first base form
/// when several are listed).
pub fn read_exceptions(path: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [form, base, ..] => out.push((form.to_string(), base.to_string())),
            _ => return Err(bad(path, Some(n), "expected `form base`")),
        }
    }
    Ok(out)
}

/// The noun lexicographer files the category task uses, with the answer word for each
/// (`lexnames(5)`: 05 noun.animal, 06 noun.artifact, 08 noun.body, 13 noun.food, 18 noun.person,
/// 20 noun.plant).
pub const NOUN_CATEGORIES: [(u32, &str); 6] =
    [(5, "animal"), (6, "object"), (8, "body"), (13, "food"), (18, "person"), (20, "plant")];

/// Common nouns by category: lowercase alphabetic lemmas of 3-12 letters whose most frequent sense
/// is tagged in the concordance and lies in one of [`NOUN_CATEGORIES`]. Sorted within a category.
pub fn nouns_by_category(dir: &Path) -> Result<Vec<(&'static str, Vec<String>)>> {
    let index = read_index(&dir.join("index.noun"))?;
    let lexfiles = read_lexfiles(&dir.join("data.noun"))?;
    let mut out: Vec<(&'static str, Vec<String>)> = NOUN_CATEGORIES.iter().map(|(_, c)| (*c, Vec::new())).collect();
    for (lemma, entry) in &index {
        if entry.tagged_senses == 0 || !plain_word(lemma) {
            continue;
        }
        let Some(first) = entry.offsets.first() else { continue };
        let lex = lexfiles
            .get(first)
            .ok_or_else(|| bad(dir, None, format!("synset {first} of `{lemma}` is not in data.noun")))?;
        if let Some(i) = NOUN_CATEGORIES.iter().position(|(l, _)| l == lex) {
            out[i].1.push(lemma.clone());
        }
    }
    for (_, words) in &mut out {
        words.sort();
    }
    Ok(out)
}

/// Irregular (or spelling-changed) verb forms of common verbs, `(form, base)`: both plain words,
/// different, the base with at least `min_tagged` tagged senses.
pub fn verb_forms(dir: &Path, min_tagged: usize) -> Result<Vec<(String, String)>> {
    let index = read_index(&dir.join("index.verb"))?;
    Ok(read_exceptions(&dir.join("verb.exc"))?
        .into_iter()
        .filter(|(form, base)| {
            form != base
                && plain_word(form)
                && plain_word(base)
                && index.get(base).is_some_and(|e| e.tagged_senses >= min_tagged)
        })
        .collect())
}

fn plain_word(w: &str) -> bool {
    (3..=12).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn reads_the_wndb_formats_and_names_bad_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "index.noun", "  1 This software and database is being provided\nsalmon n 2 1 @ 2 1 00000100 00000200\nhammer n 1 1 @ 1 0 00000300\nlion n 1 0 1 1 00000100\nice_cream n 1 0 1 1 00000200\n");
        write(d, "data.noun", "  1 licence\n00000100 05 n 01 salmon 0 000 | a fish\n00000200 13 n 01 salmon 0 000 | as food\n00000300 06 n 01 hammer 0 000 | a tool\n");
        let cats = nouns_by_category(d).unwrap();
        let get = |c: &str| cats.iter().find(|(n, _)| *n == c).unwrap().1.clone();
        assert_eq!(get("animal"), vec!["lion", "salmon"], "first sense decides; untagged and compound words are out");
        assert!(get("object").is_empty(), "hammer has no tagged sense");
        write(d, "index.verb", "go v 1 0 1 1 00000001\nsee v 1 0 1 5 00000002\n");
        write(d, "verb.exc", "went go\nsaw see\nseen see\nsee see\n");
        assert_eq!(verb_forms(d, 2).unwrap(), vec![("saw".into(), "see".into()), ("seen".into(), "see".into())]);
        write(d, "index.verb", "go v 1 0 1 1 00000001 00000009\n");
        let err = format!("{:#}", read_index(&d.join("index.verb")).unwrap_err());
        assert!(err.contains("index.verb (line 1)") && err.contains("2 offsets"), "{err}");
        write(d, "data.noun", "00000100 xx n 01 salmon 0 000 | a fish\n");
        let err = format!("{:#}", read_lexfiles(&d.join("data.noun")).unwrap_err());
        assert!(err.contains("data.noun (line 1)") && err.contains("lex_filenum `xx`"), "{err}");
    }
}
