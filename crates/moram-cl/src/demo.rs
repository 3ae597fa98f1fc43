//! The embedded demo's task sequence: two tasks on real BBC News articles (topic labelling,
//! headline writing) and two from deterministic generators a small model cannot already do (word
//! reversal, number sorting), written as TRACE-format folders so the ordinary engine runs them.
//!
//! Everything is seeded: the article split, the generated examples, the order.

use crate::data::trace::Example;
use crate::error::{Error, Result};
use crate::metrics::TaskMetric;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// One BBC article.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    /// Topic folder name (business, entertainment, politics, sport(s), tech).
    pub topic: String,
    /// First line.
    pub headline: String,
    /// The rest, whitespace-normalised.
    pub body: String,
    /// Source file.
    pub path: PathBuf,
}

/// Reads `<dir>/<topic>/*.txt` (first line: headline), sorted by path. Bytes that are not UTF-8
/// are replaced, as one file of the corpus needs.
pub fn read_bbc(dir: &Path) -> Result<Vec<Article>> {
    let mut topics: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Data {
            path: dir.into(),
            entry: None,
            message: format!("cannot read the BBC folder: {e}"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    topics.sort();
    let mut out = Vec::new();
    for t in &topics {
        let topic = t.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let mut files: Vec<PathBuf> = std::fs::read_dir(t)
            .map_err(|e| Error::io(t, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
            let text = String::from_utf8_lossy(&bytes);
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let Some(headline) = lines.next() else { continue };
            let body = lines.flat_map(str::split_whitespace).collect::<Vec<_>>().join(" ");
            if body.is_empty() {
                continue;
            }
            out.push(Article { topic: topic.clone(), headline: headline.trim().to_string(), body, path: f });
        }
    }
    if topics.len() < 2 || out.is_empty() {
        return Err(Error::Data {
            path: dir.into(),
            entry: None,
            message: format!(
                "expected topic folders of .txt articles, found {} folders, {} articles",
                topics.len(),
                out.len()
            ),
        });
    }
    Ok(out)
}

/// Sizes of the demo sequence.
#[derive(Debug, Clone, Copy)]
pub struct DemoSizes {
    /// Training examples per task.
    pub train: usize,
    /// Evaluation examples per task.
    pub eval: usize,
    /// Article words shown in prompts.
    pub words: usize,
}

fn lead(a: &Article, words: usize) -> String {
    a.body.split(' ').take(words).collect::<Vec<_>>().join(" ")
}

/// One task of the demo sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoTask {
    /// Folder name.
    pub name: String,
    /// Training pairs.
    pub train: Vec<Example>,
    /// Evaluation pairs.
    pub eval: Vec<Example>,
    /// How generations are scored.
    pub metric: TaskMetric,
}

/// The four demo tasks in training order.
pub fn demo_tasks(articles: &[Article], sizes: DemoSizes, seed: u64) -> Result<Vec<DemoTask>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let need = 2 * (sizes.train + sizes.eval);
    if articles.len() < need {
        return Err(Error::task("bbc", format!("needs {need} articles, found {}", articles.len())));
    }
    let mut shuffled: Vec<&Article> = articles.iter().collect();
    shuffled.shuffle(&mut rng);
    let (topic_part, rest) = shuffled.split_at(sizes.train + sizes.eval);
    let headline_part = &rest[..sizes.train + sizes.eval];
    let mut topics: Vec<&str> = articles.iter().map(|a| a.topic.as_str()).collect();
    topics.dedup();
    let topic_list = topics.join(", ");
    let topic = |a: &&Article| Example {
        prompt: format!(
            "Which topic is this BBC article about ({topic_list})?\nArticle: {}\nTopic:\n",
            lead(a, sizes.words)
        ),
        answer: a.topic.clone(),
    };
    let headline = |a: &&Article| Example {
        prompt: format!("Write the headline of this BBC article.\nArticle: {}\nHeadline:\n", lead(a, sizes.words)),
        answer: a.headline.clone(),
    };
    let words: Vec<&str> = articles
        .iter()
        .flat_map(|a| a.headline.split_whitespace())
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .collect();
    let reverse = |rng: &mut ChaCha8Rng| {
        let n = rng.random_range(3..=5);
        let w: Vec<String> = (0..n).map(|_| words.choose(rng).unwrap_or(&"news").to_lowercase()).collect();
        let rev: Vec<String> = w.iter().rev().cloned().collect();
        Example {
            prompt: format!("Reverse the order of these words: {}\nReversed:\n", w.join(" ")),
            answer: rev.join(" "),
        }
    };
    let sort = |rng: &mut ChaCha8Rng| {
        let n = rng.random_range(3..=5);
        let v: Vec<u32> = (0..n).map(|_| rng.random_range(10..100)).collect();
        let mut s = v.clone();
        s.sort_unstable();
        let show = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        Example {
            prompt: format!("Sort these numbers from smallest to largest: {}\nSorted:\n", show(&v)),
            answer: show(&s),
        }
    };
    let split = |v: Vec<Example>| {
        let (a, b) = v.split_at(sizes.train);
        (a.to_vec(), b.to_vec())
    };
    let (t_train, t_eval) = split(topic_part.iter().map(topic).collect());
    let (h_train, h_eval) = split(headline_part.iter().map(headline).collect());
    let (r_train, r_eval) = split((0..sizes.train + sizes.eval).map(|_| reverse(&mut rng)).collect());
    let (s_train, s_eval) = split((0..sizes.train + sizes.eval).map(|_| sort(&mut rng)).collect());
    let task = |name: &str, train, eval, metric| DemoTask { name: name.into(), train, eval, metric };
    Ok(vec![
        task("bbc-topic", t_train, t_eval, TaskMetric::Accuracy),
        task("word-reverse", r_train, r_eval, TaskMetric::Accuracy),
        task("bbc-headline", h_train, h_eval, TaskMetric::RougeL),
        task("number-sort", s_train, s_eval, TaskMetric::Accuracy),
    ])
}

/// Writes the demo tasks as TRACE folders under `dir` (train, eval and test = eval); returns the
/// task names in order with their metrics.
pub fn write_demo_data(bbc: &Path, dir: &Path, sizes: DemoSizes, seed: u64) -> Result<Vec<(String, TaskMetric)>> {
    write_tasks(dir, demo_tasks(&read_bbc(bbc)?, sizes, seed)?)
}

/// Writes tasks as TRACE folders under `dir` (train, eval and test = eval); returns their names
/// in order with their metrics.
fn write_tasks(dir: &Path, tasks: Vec<DemoTask>) -> Result<Vec<(String, TaskMetric)>> {
    let mut out = Vec::new();
    for DemoTask { name, train, eval, metric } in tasks {
        crate::data::trace::write_task(dir, &name, &train, &eval)?;
        out.push((name, metric));
    }
    Ok(out)
}

/// The BBC "same articles, different formats" sequence (the demo's sequence): four tasks over one
/// set of articles, each asking for the article's topic in another output format, so the inputs
/// overlap almost completely and only the instruction tells the tasks apart. This is where a
/// new task's atoms most easily take over an earlier task's tokens (routing leakage).
///
/// 1. `topic`: the topic word (`business`, `entertainment`, `politics`, `sport`, `tech`);
/// 2. `topic-letter`: the letter of the topic among the five listed options (`A`-`E`);
/// 3. `desk`: the topic under other names (`Money`, `Culture`, `Westminster`, `Pitch`, `Gadgets`);
/// 4. `headline`: the article's headline (ROUGE-L).
///
/// Every task uses the same `sizes.train` training and `sizes.eval` evaluation articles, drawn
/// with `seed` and balanced over topics as far as the corpus allows.
pub fn format_tasks(articles: &[Article], sizes: DemoSizes, seed: u64) -> Result<Vec<DemoTask>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut topics: Vec<&str> = articles.iter().map(|a| a.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let need = sizes.train + sizes.eval;
    // Round-robin over topics, each topic's articles shuffled: balanced classes.
    let mut pools: Vec<Vec<&Article>> =
        topics.iter().map(|t| articles.iter().filter(|a| a.topic == *t).collect()).collect();
    for p in &mut pools {
        p.shuffle(&mut rng);
    }
    let mut chosen = Vec::with_capacity(need);
    let mut k = 0;
    while chosen.len() < need && pools.iter().any(|p| k < p.len()) {
        for p in &pools {
            if chosen.len() < need {
                if let Some(a) = p.get(k) {
                    chosen.push(*a);
                }
            }
        }
        k += 1;
    }
    if chosen.len() < need {
        return Err(Error::task("bbc", format!("needs {need} articles, found {}", articles.len())));
    }
    chosen.shuffle(&mut rng);
    // The corpus folder says `sports`; the prompt's word is `sport`.
    let word = |t: &str| if t == "sports" { "sport".to_string() } else { t.to_string() };
    let words: Vec<String> = topics.iter().map(|t| word(t)).collect();
    let letters = ["A", "B", "C", "D", "E", "F", "G", "H"];
    let desks = |t: &str| match word(t).as_str() {
        "business" => "Money",
        "entertainment" => "Culture",
        "politics" => "Westminster",
        "sport" => "Pitch",
        "tech" => "Gadgets",
        _ => "Other",
    };
    let index = |t: &str| topics.iter().position(|x| *x == t).unwrap_or(0);
    let options: String =
        words.iter().enumerate().map(|(i, w)| format!("{}) {w}\n", letters.get(i).unwrap_or(&"?"))).collect();
    let desk_list: Vec<&str> = topics.iter().map(|t| desks(t)).collect();
    let make = |f: &dyn Fn(&Article, &str) -> Example| -> (Vec<Example>, Vec<Example>) {
        let all: Vec<Example> = chosen.iter().map(|a| f(a, &lead(a, sizes.words))).collect();
        let (a, b) = all.split_at(sizes.train);
        (a.to_vec(), b.to_vec())
    };
    let (t_train, t_eval) = make(&|a, text| Example {
        prompt: format!("Which topic is this BBC article about ({})?\nArticle: {text}\nTopic:\n", words.join(", ")),
        answer: word(&a.topic),
    });
    let (l_train, l_eval) = make(&|a, text| Example {
        prompt: format!(
            "Which topic is this BBC article about? Answer with the letter.\n{options}Article: {text}\nLetter:\n"
        ),
        answer: letters.get(index(&a.topic)).unwrap_or(&"?").to_string(),
    });
    let (d_train, d_eval) = make(&|a, text| Example {
        prompt: format!("Which BBC desk would file this article ({})?\nArticle: {text}\nDesk:\n", desk_list.join(", ")),
        answer: desks(&a.topic).to_string(),
    });
    let (h_train, h_eval) = make(&|a, text| Example {
        prompt: format!("Write the headline of this BBC article.\nArticle: {text}\nHeadline:\n"),
        answer: a.headline.clone(),
    });
    let task = |name: &str, train, eval, metric| DemoTask { name: name.into(), train, eval, metric };
    Ok(vec![
        task("topic", t_train, t_eval, TaskMetric::Accuracy),
        task("topic-letter", l_train, l_eval, TaskMetric::Accuracy),
        task("desk", d_train, d_eval, TaskMetric::Accuracy),
        task("headline", h_train, h_eval, TaskMetric::RougeL),
    ])
}

/// Writes [`format_tasks`] as TRACE folders under `dir`; returns the task names with their metrics.
pub fn write_format_data(bbc: &Path, dir: &Path, sizes: DemoSizes, seed: u64) -> Result<Vec<(String, TaskMetric)>> {
    write_tasks(dir, format_tasks(&read_bbc(bbc)?, sizes, seed)?)
}
