//! The one thread that owns the model: it takes requests from a bounded queue, batches the ones
//! that share generation settings (up to the batch size), generates, and answers each request
//! whole or token by token. libtorch runs one batch at a time; HTTP handlers never touch it.
//!
//! A request with a list of prompts is answered as `moram generate` answers the list (the
//! evaluation's batches: prompts sorted by length, the run's evaluation batch size), so the
//! evaluation prompts of a task sent as one list get the text evaluation scored. Single prompts
//! arriving together share a batch as they come; a prompt's greedy answer can then differ from
//! evaluation's where two tokens nearly tie, because other batch shapes sum in another order.

use moram_cl::learners::llm::{Answer, LlmLearner};
use moram_models::llm::{ChatMessage, GenerationConfig, LlmTokenizer};
use tokio::sync::{mpsc, oneshot};

/// What to answer: a plain prompt (read as evaluation reads one) or chat messages.
#[derive(Debug, Clone)]
pub enum Input {
    /// A completion prompt.
    Text(String),
    /// A chat, rendered by the model's chat template.
    Chat(Vec<ChatMessage>),
}

/// Where an answer goes.
pub enum Reply {
    /// The whole answer at once.
    Whole(oneshot::Sender<Result<Answer, String>>),
    /// The answers of a list of prompts, generated as `moram generate` generates a list.
    List(Vec<Input>, oneshot::Sender<Result<Vec<Answer>, String>>),
    /// Text pieces as tokens are chosen, then the answer.
    Stream(mpsc::UnboundedSender<Piece>),
}

/// One message of a streamed answer.
#[derive(Debug)]
pub enum Piece {
    /// Text added since the last piece.
    Text(String),
    /// The answer is complete.
    Done(Answer),
    /// Generation failed.
    Failed(String),
}

/// One request for the engine.
pub struct Job {
    /// The prompt.
    pub input: Input,
    /// How to generate.
    pub config: GenerationConfig,
    /// Where the answer goes.
    pub reply: Reply,
}

impl Job {
    fn fail(self, message: String) {
        match self.reply {
            Reply::Whole(tx) => {
                let _ = tx.send(Err(message));
            }
            Reply::List(_, tx) => {
                let _ = tx.send(Err(message));
            }
            Reply::Stream(tx) => {
                let _ = tx.send(Piece::Failed(message));
            }
        }
    }
}

/// Token ids of one input, as evaluation reads a plain prompt or through the chat template.
fn encode(learner: &LlmLearner, input: &Input) -> moram_cl::Result<Vec<i64>> {
    match input {
        Input::Text(text) => learner.encode_prompt(text, None),
        Input::Chat(messages) => learner.encode_chat(messages).map(|(_, ids)| ids),
    }
}

/// A list request: every input encoded, then generated in evaluation's batches.
fn answer_list(learner: &mut LlmLearner, inputs: &[Input], config: &GenerationConfig) -> Result<Vec<Answer>, String> {
    let ids =
        inputs.iter().map(|i| encode(learner, i)).collect::<moram_cl::Result<Vec<_>>>().map_err(|e| e.to_string())?;
    learner.generate(&ids, config).map_err(|e| e.to_string())
}

/// Runs the engine until every sender of `jobs` is gone (the server stopped).
pub fn run(mut learner: LlmLearner, mut jobs: mpsc::Receiver<Job>, batch: usize) {
    let tokenizer = learner.tokenizer().clone();
    let mut pending: Option<Job> = None;
    loop {
        let Some(first) = pending.take().or_else(|| jobs.blocking_recv()) else { return };
        let first = match first.reply {
            Reply::List(inputs, tx) => {
                let _ = tx.send(answer_list(&mut learner, &inputs, &first.config));
                continue;
            }
            reply => Job { reply, ..first },
        };
        let mut group = vec![first];
        while group.len() < batch.max(1) {
            match jobs.try_recv() {
                Ok(job) if job.config == group[0].config && !matches!(job.reply, Reply::List(..)) => group.push(job),
                Ok(job) => {
                    pending = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        answer(&mut learner, &tokenizer, group);
    }
}

/// Encodes, generates and answers one group of jobs with equal settings.
fn answer(learner: &mut LlmLearner, tokenizer: &LlmTokenizer, group: Vec<Job>) {
    let mut ready = Vec::with_capacity(group.len());
    let mut ids = Vec::with_capacity(group.len());
    for job in group {
        match encode(learner, &job.input) {
            Ok(x) if !x.is_empty() => {
                ids.push(x);
                ready.push(job);
            }
            Ok(_) => job.fail("the prompt has no token".into()),
            Err(e) => job.fail(e.to_string()),
        }
    }
    if ready.is_empty() {
        return;
    }
    let config = ready[0].config.clone();
    // Per streamed row: the ids so far and the text already sent.
    let mut streamed: Vec<(Vec<i64>, usize)> = vec![(Vec::new(), 0); ready.len()];
    let mut on_token = |row: usize, id: i64| -> bool {
        let Reply::Stream(tx) = &ready[row].reply else { return true };
        let (so_far, sent) = &mut streamed[row];
        so_far.push(id);
        // A piece is sent once the text grew and does not end inside a multi-byte character
        // (byte-level tokens can split one); the rest follows with the next token.
        let Ok(text) = tokenizer.decode(so_far, true) else { return true };
        if text.len() > *sent && !text.ends_with('\u{fffd}') && text.is_char_boundary(*sent) {
            let piece = text[*sent..].to_string();
            *sent = text.len();
            return tx.send(Piece::Text(piece)).is_ok();
        }
        !tx.is_closed()
    };
    match learner.generate_batch(&ids, &config, &mut on_token) {
        Ok(answers) => {
            for ((job, answer), (_, sent)) in ready.into_iter().zip(answers).zip(streamed) {
                match job.reply {
                    Reply::Whole(tx) => {
                        let _ = tx.send(Ok(answer));
                    }
                    Reply::List(_, tx) => {
                        let _ = tx.send(Ok(vec![answer]));
                    }
                    Reply::Stream(tx) => {
                        if answer.answer.len() > sent && answer.answer.is_char_boundary(sent) {
                            let _ = tx.send(Piece::Text(answer.answer[sent..].to_string()));
                        }
                        let _ = tx.send(Piece::Done(answer));
                    }
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            for job in ready {
                job.fail(message.clone());
            }
        }
    }
}
