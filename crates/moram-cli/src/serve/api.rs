//! The OpenAI request bodies moram serves, checked field by field (a bad field is a 400 that
//! names it), and the response objects.

use super::engine::Input;
use moram_cl::learners::llm::Answer;
use moram_models::llm::{ChatMessage, GenerationConfig};
use serde_json::{json, Map, Value};

/// A request error: HTTP status, message and the offending field.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// What is wrong.
    pub message: String,
    /// The request field it is about.
    pub param: Option<String>,
    /// OpenAI's error type.
    pub kind: &'static str,
}

impl ApiError {
    /// A 400 about `field`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError { status: 400, message: message.into(), param: Some(field.into()), kind: "invalid_request_error" }
    }

    /// Any status without a field.
    pub fn status(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), param: None, kind }
    }

    /// The OpenAI error object.
    pub fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": Value::Null } })
    }
}

/// What the server allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens: usize,
}

/// A checked request: its prompts, settings and whether to stream.
#[derive(Debug)]
pub struct Request {
    /// One input per choice.
    pub inputs: Vec<Input>,
    /// Generation settings.
    pub config: GenerationConfig,
    /// Server-sent events instead of one response.
    pub stream: bool,
}

/// Parses a `/v1/completions` or `/v1/chat/completions` body; `defaults` are the run's settings
/// (greedy unless the request asks for a temperature above 0).
pub fn parse(body: &[u8], chat: bool, defaults: &GenerationConfig, limits: &Limits) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::status(400, "invalid_request_error", format!("the body is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::status(400, "invalid_request_error", "the body must be a JSON object"))?;
    let inputs = if chat { vec![Input::Chat(messages(obj)?)] } else { prompts(obj)? };
    let mut config = defaults.clone();
    if let Some(n) = uint(obj, "max_tokens")?.or(uint(obj, "max_completion_tokens")?) {
        if n == 0 || n > limits.max_tokens as u64 {
            return Err(ApiError::field("max_tokens", format!("must lie in 1..={}, found {n}", limits.max_tokens)));
        }
        config.max_new_tokens = n as usize;
    }
    config.max_new_tokens = config.max_new_tokens.min(limits.max_tokens);
    if let Some(t) = number(obj, "temperature")? {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::field("temperature", format!("must lie in [0, 2], found {t}")));
        }
        config.do_sample = t > 0.0;
        if t > 0.0 {
            config.temperature = t;
        }
    }
    if let Some(p) = number(obj, "top_p")? {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::field("top_p", format!("must lie in (0, 1], found {p}")));
        }
        config.top_p = p;
    }
    if let Some(seed) = obj.get("seed").filter(|v| !v.is_null()) {
        config.seed = seed.as_i64().ok_or_else(|| ApiError::field("seed", "must be an integer"))? as u64;
    }
    if let Some(n) = uint(obj, "n")? {
        if n != 1 {
            return Err(ApiError::field("n", format!("only n = 1 is served, found {n}")));
        }
    }
    for (field, inert) in [("stop", Value::Null), ("logprobs", Value::Null), ("echo", Value::Bool(false))] {
        if let Some(v) = obj.get(field) {
            if *v != inert && !(field == "logprobs" && *v == Value::Bool(false)) {
                return Err(ApiError::field(field, format!("`{field}` is not supported by moram serve")));
            }
        }
    }
    for field in ["frequency_penalty", "presence_penalty"] {
        if number(obj, field)?.is_some_and(|v| v != 0.0) {
            return Err(ApiError::field(
                field,
                format!("`{field}` is not supported (moram uses the run's repetition penalty)"),
            ));
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("stream", "must be true or false")),
    };
    Ok(Request { inputs, config, stream })
}

fn prompts(obj: &Map<String, Value>) -> Result<Vec<Input>, ApiError> {
    match obj.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() => Ok(vec![Input::Text(p.clone())]),
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= 64 => list
            .iter()
            .map(|p| match p {
                Value::String(p) if !p.is_empty() => Ok(Input::Text(p.clone())),
                _ => Err(ApiError::field(
                    "prompt",
                    "a prompt list must hold non-empty strings (token ids are not served)",
                )),
            })
            .collect(),
        Some(_) => Err(ApiError::field("prompt", "must be a non-empty string or a list of 1 to 64 of them")),
        None => Err(ApiError::field("prompt", "is required")),
    }
}

fn messages(obj: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let list = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::field("messages", "must be a non-empty list of {role, content}"))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("messages[{i}]");
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field(&field, "needs a string `role`"))?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                // The content-parts form: text parts joined.
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => Ok(t.to_string()),
                        _ => Err(ApiError::field(&field, "only text content parts are served")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
                _ => return Err(ApiError::field(&field, "needs a string `content`")),
            };
            Ok(ChatMessage { role: role.into(), content })
        })
        .collect()
}

fn uint(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ApiError::field(field, "must be a non-negative integer")),
    }
}

fn number(obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| ApiError::field(field, "must be a number")),
    }
}

/// `stop` when a stop token ended the answer, `length` when `max_tokens` did.
pub fn finish_reason(answer: &Answer) -> &'static str {
    if answer.stopped {
        "stop"
    } else {
        "length"
    }
}

/// The `usage` object over `answers`.
pub fn usage(answers: &[Answer]) -> Value {
    let prompt: usize = answers.iter().map(|a| a.prompt_tokens).sum();
    let completion: usize = answers.iter().map(|a| a.answer_tokens).sum();
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// A whole completion or chat completion response.
pub fn response(chat: bool, id: &str, created: u64, model: &str, answers: &[Answer]) -> Value {
    let choices: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if chat {
                json!({ "index": i, "message": { "role": "assistant", "content": a.answer },
                        "finish_reason": finish_reason(a), "logprobs": Value::Null })
            } else {
                json!({ "index": i, "text": a.answer, "finish_reason": finish_reason(a), "logprobs": Value::Null })
            }
        })
        .collect();
    let object = if chat { "chat.completion" } else { "text_completion" };
    json!({ "id": id, "object": object, "created": created, "model": model, "choices": choices, "usage": usage(answers) })
}

/// One streamed chunk: a text piece (`delta`) or the end (`finish`).
pub fn chunk(chat: bool, id: &str, created: u64, model: &str, delta: Option<&str>, finish: Option<&str>) -> Value {
    let choice = if chat {
        let delta = match delta {
            Some(text) => json!({ "role": "assistant", "content": text }),
            None => json!({}),
        };
        json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": Value::Null })
    } else {
        json!({ "index": 0, "text": delta.unwrap_or(""), "finish_reason": finish, "logprobs": Value::Null })
    };
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    json!({ "id": id, "object": object, "created": created, "model": model, "choices": [choice] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str, chat: bool) -> Result<Request, ApiError> {
        parse(body.as_bytes(), chat, &GenerationConfig::default(), &Limits { max_tokens: 256 })
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, chat, field) in [
            (r#"{"prompt": 3}"#, false, "prompt"),
            (r#"{}"#, false, "prompt"),
            (r#"{"prompt": "a", "max_tokens": 1000}"#, false, "max_tokens"),
            (r#"{"prompt": "a", "max_tokens": -1}"#, false, "max_tokens"),
            (r#"{"prompt": "a", "temperature": 3}"#, false, "temperature"),
            (r#"{"prompt": "a", "top_p": 0}"#, false, "top_p"),
            (r#"{"prompt": "a", "n": 2}"#, false, "n"),
            (r#"{"prompt": "a", "stop": ["x"]}"#, false, "stop"),
            (r#"{"prompt": "a", "stream": "yes"}"#, false, "stream"),
            (r#"{"messages": []}"#, true, "messages"),
            (r#"{"messages": [{"role": "user"}]}"#, true, "messages[0]"),
        ] {
            let err = parse_str(body, chat).unwrap_err();
            assert_eq!((err.status, err.param.as_deref()), (400, Some(field)), "{body}: {err:?}");
        }
        assert_eq!(parse_str("not json", false).unwrap_err().status, 400);
    }

    #[test]
    fn settings_follow_the_request() {
        let r = parse_str(r#"{"prompt": ["a", "b"], "max_tokens": 7, "stream": true, "stop": null}"#, false).unwrap();
        assert_eq!((r.inputs.len(), r.config.max_new_tokens, r.stream, r.config.do_sample), (2, 7, true, false));
        let r = parse_str(r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "seed": 4}"#, true)
            .unwrap();
        assert!(r.config.do_sample && r.config.temperature == 0.5 && r.config.seed == 4);
        assert!(matches!(&r.inputs[0], Input::Chat(m) if m[0].content == "hi"));
        // temperature 0: greedy, as the run evaluates.
        let r = parse_str(r#"{"prompt": "a", "temperature": 0}"#, false).unwrap();
        assert!(!r.config.do_sample);
    }
}
