//! The demo's task builder on a generated BBC-like folder: four tasks, seeded and repeatable,
//! answers taken from the articles.

use moram_cl::demo::{demo_tasks, read_bbc, write_demo_data, DemoSizes};
use moram_cl::metrics::TaskMetric;
use moram_cl::synthetic::write_fake_bbc;

#[test]
fn four_seeded_tasks_from_articles_and_generators() {
    let tmp = tempfile::tempdir().unwrap();
    write_fake_bbc(tmp.path(), 30).unwrap();
    let articles = read_bbc(tmp.path()).unwrap();
    assert_eq!(articles.len(), 151);
    let odd = articles.iter().find(|a| a.path.ends_with("tech/999.txt")).unwrap();
    assert_eq!(odd.headline, "Caf\u{fffd} opens");
    assert_eq!(odd.body, "A caf\u{fffd} opened today.");

    let sizes = DemoSizes { train: 40, eval: 8, words: 5 };
    let tasks = demo_tasks(&articles, sizes, 42).unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["bbc-topic", "word-reverse", "bbc-headline", "number-sort"]);
    assert_eq!(
        tasks.iter().map(|t| t.metric).collect::<Vec<_>>(),
        [TaskMetric::Accuracy, TaskMetric::Accuracy, TaskMetric::RougeL, TaskMetric::Accuracy]
    );
    for t in &tasks {
        assert_eq!((t.train.len(), t.eval.len()), (40, 8));
    }
    // Topic answers are folder names listed in the prompt; headlines are first lines.
    for ex in tasks[0].train.iter().chain(&tasks[0].eval) {
        assert!(ex.prompt.contains("(business, entertainment, politics, sports, tech)"));
        assert!(["business", "entertainment", "politics", "sports", "tech"].contains(&ex.answer.as_str()));
    }
    for ex in &tasks[2].train {
        assert!(articles
            .iter()
            .any(|a| a.headline == ex.answer
                && ex.prompt.contains(&a.body.split(' ').take(5).collect::<Vec<_>>().join(" "))));
    }
    // Topic and headline articles are disjoint.
    let topic_prompts: Vec<&str> = tasks[0].train.iter().map(|e| e.prompt.split("Article: ").nth(1).unwrap()).collect();
    assert!(tasks[2].train.iter().all(|e| !topic_prompts.contains(&e.prompt.split("Article: ").nth(1).unwrap())));
    // Generated answers are right.
    for ex in &tasks[1].train {
        let list = ex.prompt.split(": ").nth(1).unwrap().lines().next().unwrap();
        let rev: Vec<&str> = list.split(' ').rev().collect();
        assert_eq!(ex.answer, rev.join(" "));
    }
    for ex in &tasks[3].train {
        let list = ex.prompt.split(": ").nth(1).unwrap().lines().next().unwrap();
        let mut v: Vec<u32> = list.split(' ').map(|x| x.parse().unwrap()).collect();
        v.sort_unstable();
        assert_eq!(ex.answer, v.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    }
    // Seeded: same seed, same tasks; another seed, another split.
    assert_eq!(demo_tasks(&articles, sizes, 42).unwrap(), tasks);
    assert_ne!(demo_tasks(&articles, sizes, 43).unwrap()[0].train, tasks[0].train);
    // Too few articles is an error, not a silent shrink.
    let e = demo_tasks(&articles[..50], sizes, 42).unwrap_err().to_string();
    assert!(e.contains("needs 96 articles, found 50"), "{e}");
    // Written as TRACE folders the engine reads.
    let out = tmp.path().join("data");
    let written = write_demo_data(tmp.path(), &out, sizes, 42).unwrap();
    assert_eq!(written.len(), 4);
    let back = moram_cl::data::trace::load_task_split(&out, "number-sort", "train").unwrap();
    assert_eq!(back, tasks[3].train);
    assert!(read_bbc(&out.join("bbc-topic")).is_err());
}

#[test]
fn the_formats_sequence_asks_one_question_four_ways_over_the_same_articles() {
    let tmp = tempfile::tempdir().unwrap();
    write_fake_bbc(tmp.path(), 30).unwrap();
    let articles = read_bbc(tmp.path()).unwrap();
    let sizes = DemoSizes { train: 40, eval: 10, words: 5 };
    let tasks = moram_cl::demo::format_tasks(&articles, sizes, 7).unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["topic", "topic-letter", "desk", "headline"]);
    assert_eq!(tasks[3].metric, TaskMetric::RougeL);
    let words = ["business", "entertainment", "politics", "sport", "tech"];
    let desks = ["Money", "Culture", "Westminster", "Pitch", "Gadgets"];
    for i in 0..50 {
        let (split, k) = if i < 40 { (0, i) } else { (1, i - 40) };
        let ex = |t: usize| if split == 0 { &tasks[t].train[k] } else { &tasks[t].eval[k] };
        // The same article behind the four prompts: the same excerpt after "Article: ".
        let excerpt = |p: &str| p.split("Article: ").nth(1).unwrap().lines().next().unwrap().to_string();
        let text = excerpt(&ex(0).prompt);
        assert!((1..4).all(|t| excerpt(&ex(t).prompt) == text), "example {i}");
        // One topic, three spellings, each consistent with the others.
        let topic = words.iter().position(|w| *w == ex(0).answer).unwrap();
        assert_eq!(ex(1).answer, ["A", "B", "C", "D", "E"][topic]);
        assert_eq!(ex(2).answer, desks[topic]);
        assert!(ex(1).prompt.contains(&format!("{}) {}\n", ex(1).answer, words[topic])));
        let a = articles.iter().find(|a| a.headline == ex(3).answer).unwrap();
        assert_eq!(if a.topic == "sports" { "sport" } else { a.topic.as_str() }, words[topic]);
    }
    // Balanced classes: 50 draws over 5 topics, 10 each.
    let mut counts = std::collections::BTreeMap::new();
    for ex in tasks[0].train.iter().chain(&tasks[0].eval) {
        *counts.entry(ex.answer.clone()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&c| c == 10), "{counts:?}");
    assert_eq!(moram_cl::demo::format_tasks(&articles, sizes, 7).unwrap(), tasks, "seeded");
    let too_many = DemoSizes { train: 200, eval: 10, words: 5 };
    assert!(moram_cl::demo::format_tasks(&articles, too_many, 7).is_err());
}
