//! Chat templates: a checkpoint's Jinja template ([`super::LlmTokenizer::chat_template`]) rendered
//! as `transformers`' `apply_chat_template` renders it, on minijinja.
//!
//! transformers compiles templates in a sandboxed Jinja environment with `trim_blocks` and
//! `lstrip_blocks` on and the loop-controls extension, and passes `messages`,
//! `add_generation_prompt` and the tokenizer's special tokens (`bos_token`, `eos_token`, ...)
//! as variables, plus the functions `raise_exception` and `strftime_now`. Python string methods
//! that templates call (`.strip()`, `.startswith(..)`, `.split(..)`) come from minijinja's Python
//! compatibility layer.

use crate::error::{Error, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// One chat message (`role` is `system`, `user` or `assistant` for the templates in use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: String,
    /// What they say.
    pub content: String,
}

impl ChatMessage {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage { role: "user".into(), content: content.into() }
    }
}

/// The special-token texts a template may refer to.
#[derive(Debug, Clone, Default)]
pub struct ChatTokens {
    /// `bos_token` (empty when the model has none).
    pub bos: String,
    /// `eos_token`.
    pub eos: String,
}

/// Renders `template` over `messages`; with `add_generation_prompt` the text ends where the
/// assistant's answer starts. A template that raises (e.g. "Conversation roles must alternate")
/// gives [`Error::Input`] with its message.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    tokens: &ChatTokens,
    add_generation_prompt: bool,
) -> Result<String> {
    let mut env = Environment::new();
    let bad = |e: minijinja::Error| {
        let mut message = e.to_string();
        if let Some(detail) = e.detail() {
            message = format!("{message}: {detail}");
        }
        Error::Input(format!("chat template: {message}"))
    };
    env.set_syntax(SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(bad)?);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> std::result::Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
    });
    env.add_function("strftime_now", |format: String| -> String { strftime_now(&format) });
    env.add_template("chat", template).map_err(bad)?;
    let context = minijinja::context! {
        messages => Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => add_generation_prompt,
        bos_token => tokens.bos.as_str(),
        eos_token => tokens.eos.as_str(),
    };
    env.get_template("chat").and_then(|t| t.render(context)).map_err(bad)
}

/// `strftime_now` for the date formats templates use (Llama 3.x: `"%d %b %Y"`), in UTC.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const FULL: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let mi = (m - 1) as usize;
    format
        .replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
        .replace("%B", FULL[mi])
        .replace("%b", MONTHS[mi])
}

/// Year, month (1-12) and day of the Unix day `z` (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template as its GGUF stores it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_renders_as_transformers_does() {
        let out = render(SMOLLM2, &[ChatMessage::user("Hi there")], &ChatTokens::default(), true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
        );
        let system = ChatMessage { role: "system".into(), content: "Be brief.".into() };
        let out = render(SMOLLM2, &[system, ChatMessage::user("Hi")], &ChatTokens::default(), false).unwrap();
        assert_eq!(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    }

    /// Gemma's template (as google/gemma-2b-it publishes it): `bos_token`, `raise_exception`, a Python string method and block
    /// whitespace (trim_blocks / lstrip_blocks) as transformers renders it.
    #[test]
    fn gemma_template_uses_bos_raise_and_python_methods() {
        let gemma = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";
        let tokens = ChatTokens { bos: "<bos>".into(), eos: "<eos>".into() };
        let out = render(gemma, &[ChatMessage::user("  Hello ")], &tokens, true).unwrap();
        assert_eq!(out, "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
        let system = ChatMessage { role: "system".into(), content: "x".into() };
        let err = render(gemma, &[system], &tokens, true).unwrap_err().to_string();
        assert!(err.contains("System role not supported"), "{err}");
        let strip = "{% for m in messages %}{{ m['content'].strip().upper() }}{% endfor %}";
        assert_eq!(render(strip, &[ChatMessage::user(" ab ")], &tokens, false).unwrap(), "AB");
        // Block tags take their line's indentation and newline with them (trim_blocks, lstrip_blocks).
        let blocks = "{% for m in messages %}\n    {% if true %}\n{{ m['content'] }}{% endif %}\n{% endfor %}";
        let two = [ChatMessage::user("a"), ChatMessage::user("b")];
        assert_eq!(render(blocks, &two, &tokens, false).unwrap(), "ab");
    }

    #[test]
    fn a_broken_template_is_an_input_error() {
        let err = render("{% for m in messages %}", &[], &ChatTokens::default(), true).unwrap_err();
        assert!(matches!(err, Error::Input(ref m) if m.starts_with("chat template:")), "{err}");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
