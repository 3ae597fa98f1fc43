//! [`LlmTokenizer`]: tokenizers of decoder LLMs on the `tokenizers` crate (the implementation
//! behind Hugging Face's fast tokenizers): from a checkpoint's `tokenizer.json`, or built from a
//! GGUF file's metadata (`tokenizer.ggml.*`).
//!
//! GGUF byte-level BPE (`tokenizer.ggml.model = gpt2`): vocabulary and merges from the metadata,
//! control tokens (type 3) as special tokens, GPT-2 byte-level pre-tokenisation, preceded for the
//! `smollm` / `starcoder` pre-tokenizer types by splitting numbers into single digits (as
//! llama.cpp's pre-tokenizer table and SmolLM2's own `tokenizer.json` do); the `qwen2` type is
//! Qwen2's `tokenizer.json` pipeline (NFC, Qwen's split regex, byte-level). BOS is prepended only
//! when `tokenizer.ggml.add_bos_token` says so.
//!
//! GGUF SentencePiece BPE (`tokenizer.ggml.model = llama`, as Gemma 3 files store it): built as
//! `transformers` builds Gemma's fast tokenizer from a SentencePiece model (its
//! `SentencePieceExtractor`): a merge for every split of a vocabulary entry into two entries,
//! ranked by the entry's score (`tokenizer.ggml.scores`), BPE with byte fallback, spaces
//! normalised to `▁`, control and user-defined tokens special, and a decoder that turns `▁` back
//! into spaces and byte tokens into bytes. (transformers' own GGUF conversion builds a Unigram
//! model over these BPE scores, which splits common words into pieces; it is not followed.)
//! Other tokenizer models and pre-tokenizer types are refused by name.

use super::gguf::{GgufFile, Value};
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, Tokenizer};

/// The pre-tokenizer split of Qwen2's `tokenizer.json` (and llama.cpp's `qwen2` pre-tokenizer type):
/// GPT-4's pattern with single digits.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A decoder LLM's tokenizer and its special ids.
#[derive(Clone)]
pub struct LlmTokenizer {
    inner: Tokenizer,
    /// Beginning-of-sequence id, if the model has one.
    pub bos: Option<i64>,
    /// End-of-sequence ids (generation stops on any of them).
    pub eos: Vec<i64>,
    /// Whether [`LlmTokenizer::encode`] prepends BOS.
    pub add_bos: bool,
    /// The checkpoint's chat template (Jinja; `tokenizer_config.json`'s `chat_template`, a
    /// `chat_template.jinja` next to it, or GGUF `tokenizer.chat_template`), rendered by
    /// [`super::chat::render`].
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for LlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmTokenizer").field("bos", &self.bos).field("eos", &self.eos).finish()
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Corrupt { path: path.into(), reason: format!("tokenizer: {e}") }
}

/// `tokenizer.ggml.token_type` (empty when absent: every token then counts as normal).
fn token_types(gguf: &GgufFile) -> Vec<u64> {
    gguf.get("tokenizer.ggml.token_type").and_then(Value::as_array).and_then(|a| a.to_u64s()).unwrap_or_default()
}

/// Token -> id, the position in the vocabulary.
fn bpe_vocab(tokens: &[String]) -> tokenizers::models::bpe::Vocab {
    tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
}

/// GGUF `tokenizer.chat_template` (llama.cpp's converter copies the checkpoint's default template).
fn gguf_chat_template(gguf: &GgufFile) -> Option<String> {
    gguf.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string)
}

/// `tokenizer_config.json`'s `chat_template`: a string, or a list of `{name, template}` of which
/// transformers uses the one named `default`.
fn hf_chat_template(path: &Path, value: &serde_json::Value) -> Result<String> {
    if let Some(t) = value.as_str() {
        return Ok(t.to_string());
    }
    let named = value
        .as_array()
        .and_then(|list| list.iter().find(|t| t.get("name").and_then(serde_json::Value::as_str) == Some("default")));
    named
        .and_then(|t| t.get("template"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| tok_err(path, "`chat_template` is neither a string nor a list with a template named `default`"))
}

impl LlmTokenizer {
    /// Builds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path();
        let model = gguf.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("<missing>");
        match model {
            "gpt2" => {}
            "llama" => return Self::from_gguf_sentencepiece(gguf),
            _ => {
                return Err(tok_err(
                    path,
                    format!(
                        "tokenizer.ggml.model `{model}` is not supported (gpt2 byte-level BPE, llama SentencePiece)"
                    ),
                ))
            }
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = gguf
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| tok_err(path, format!("metadata `{key}` is missing")))?;
            arr.as_strings()
                .map(<[String]>::to_vec)
                .ok_or_else(|| tok_err(path, format!("metadata `{key}` is not an array of strings")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_string(), b.to_string())),
                None => Err(tok_err(path, format!("merge `{m}` is not two space-separated symbols"))),
            })
            .collect::<Result<_>>()?;
        let (types, vocab) = (token_types(gguf), bpe_vocab(&tokens));
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| tok_err(path, e))?;
        let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let pre = gguf.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
        let mut inner = Tokenizer::new(bpe);
        let pre_tokenizer = match pre {
            "smollm" | "starcoder" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level,
            ])),
            "gpt2" | "default" => byte_level,
            "qwen2" => {
                // Qwen2's `tokenizer.json`: NFC, then its own split regex, then byte-level
                // without GPT-2's regex.
                inner.with_normalizer(Some(NFC));
                let split =
                    Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)
                        .map_err(|e| tok_err(path, e))?;
                PreTokenizerWrapper::Sequence(Sequence::new(vec![
                    PreTokenizerWrapper::Split(split),
                    PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
                ]))
            }
            other => {
                return Err(tok_err(
                    path,
                    format!("tokenizer.ggml.pre `{other}` is not supported (smollm, starcoder, gpt2, qwen2)"),
                ))
            }
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, &t)| t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        let id = |key: &str| gguf.get(key).and_then(Value::as_u64).map(|v| v as i64);
        let add_bos = matches!(gguf.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        Ok(LlmTokenizer {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            add_bos,
            chat_template: gguf_chat_template(gguf),
        })
    }

    /// The SentencePiece tokenizer of a GGUF file (`tokenizer.ggml.model = llama`); see the module
    /// docs.
    fn from_gguf_sentencepiece(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path();
        let array = |key: &str| {
            gguf.get(key).and_then(Value::as_array).ok_or_else(|| tok_err(path, format!("metadata `{key}` is missing")))
        };
        let tokens = array("tokenizer.ggml.tokens")?
            .as_strings()
            .ok_or_else(|| tok_err(path, "metadata `tokenizer.ggml.tokens` is not an array of strings"))?;
        let scores = array("tokenizer.ggml.scores")?
            .to_f64s()
            .ok_or_else(|| tok_err(path, "metadata `tokenizer.ggml.scores` is not an array of numbers"))?;
        if scores.len() != tokens.len() {
            return Err(tok_err(path, format!("{} scores for {} tokens", scores.len(), tokens.len())));
        }
        let (types, vocab) = (token_types(gguf), bpe_vocab(tokens));
        // Every split of an entry into two entries is a merge, ranked by the entry's score (ties:
        // vocabulary order, then the parts' ids), as SentencePieceExtractor ranks them.
        let mut merges: Vec<(String, String, f64)> = Vec::new();
        for (piece, &score) in tokens.iter().zip(&scores) {
            let mut local: Vec<(String, String, f64, u32, u32)> = piece
                .char_indices()
                .skip(1)
                .filter_map(|(k, _)| {
                    let (l, r) = piece.split_at(k);
                    Some((l.to_string(), r.to_string(), score, *vocab.get(l)?, *vocab.get(r)?))
                })
                .collect();
            local.sort_by_key(|m| (m.3, m.4));
            merges.extend(local.into_iter().map(|(l, r, s, ..)| (l, r, s)));
        }
        merges.sort_by(|a, b| b.2.total_cmp(&a.2));
        let merges: Vec<(String, String)> = merges.into_iter().map(|(l, r, _)| (l, r)).collect();
        let id = |key: &str| gguf.get(key).and_then(Value::as_u64).map(|v| v as i64);
        let unk = id("tokenizer.ggml.unknown_token_id")
            .and_then(|u| tokens.get(u as usize))
            .cloned()
            .unwrap_or_else(|| "<unk>".to_string());
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk)
            .byte_fallback(true)
            .fuse_unk(true)
            .build()
            .map_err(|e| tok_err(path, e))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_normalizer(Some(Replace::new(" ", "\u{2581}").map_err(|e| tok_err(path, e))?));
        let mut decoders = vec![
            DecoderWrapper::Replace(Replace::new("\u{2581}", " ").map_err(|e| tok_err(path, e))?),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ];
        if matches!(gguf.get("tokenizer.ggml.add_space_prefix"), Some(Value::Bool(true))) {
            decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
        }
        inner.with_decoder(Some(DecoderSequence::new(decoders)));
        // Control (3) and user-defined (4) tokens are matched whole, before the model runs.
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        Ok(LlmTokenizer {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            add_bos: !matches!(gguf.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(false))),
            chat_template: gguf_chat_template(gguf),
        })
    }

    /// Loads `tokenizer.json` from a Hugging Face checkpoint folder with BOS/EOS as the model's
    /// config says; `tokenizer_config.json`'s `add_bos_token` decides whether BOS is prepended
    /// (absent: yes, as LLaMA-2/3 and Gemma do through their post-processors).
    pub fn from_hf_dir(dir: impl AsRef<Path>, config: &super::LlmConfig) -> Result<Self> {
        let dir = dir.as_ref();
        let tc = dir.join("tokenizer_config.json");
        let json = match std::fs::read_to_string(&tc) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| tok_err(&tc, format!("invalid JSON: {e}")))?),
            Err(_) => None,
        };
        let add_bos = json
            .as_ref()
            .and_then(|j: &serde_json::Value| j.get("add_bos_token"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        let mut tokenizer =
            Self::from_file(dir.join("tokenizer.json"), config.bos_token_id, config.eos_token_ids.clone(), add_bos)?;
        tokenizer.chat_template = match json.as_ref().and_then(|j| j.get("chat_template")) {
            Some(t) => Some(hf_chat_template(&tc, t)?),
            // transformers >= 4.43 may save the template as a file of its own.
            None => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        Ok(tokenizer)
    }

    /// Loads a Hugging Face `tokenizer.json`; `bos`/`eos` come from the model's config.
    pub fn from_file(path: impl AsRef<Path>, bos: Option<i64>, eos: Vec<i64>, add_bos: bool) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::Io { path: path.into(), source: std::io::Error::from(std::io::ErrorKind::NotFound) });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?;
        Ok(LlmTokenizer { inner, bos, eos, add_bos, chat_template: None })
    }

    /// Token ids of `text` (special-token strings such as `<|im_start|>` map to their ids),
    /// with BOS first when the tokenizer adds it.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Input(format!("tokenizing: {e}")))?;
        let mut ids: Vec<i64> = Vec::with_capacity(enc.len() + 1);
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend(enc.get_ids().iter().map(|&i| i64::from(i)));
        Ok(ids)
    }

    /// Token ids of `text` without any special token added (TRACE's `add_special_tokens=False`).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Input(format!("tokenizing: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Text of `ids`; special tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, skip_special).map_err(|e| Error::Input(format!("decoding: {e}")))
    }

    /// The text of token `id` (special tokens included), e.g. `"<|im_end|>"` for a chat
    /// template's `eos_token`.
    pub fn token_text(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id))
    }

    /// Vocabulary size (with special tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
