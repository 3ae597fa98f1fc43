//! [`ClipTokenizer`]: CLIP's byte-level BPE as the OpenAI / open_clip reference applies it.
//!
//! The vocabulary and BPE come from the `instant-clip-tokenizer` crate, which embeds OpenAI's
//! `bpe_simple_vocab_16e6.txt` (byte-identical to open_clip's). The text clean-up before BPE is
//! open_clip's `_clean_lower`: `ftfy.fix_text`, `html.unescape` twice, whitespace collapsed,
//! stripped, lower-cased. [`clean_text`] reproduces ftfy 6's default fixes except its heuristic
//! mojibake repair (`fix_encoding`), and HTML entities are decoded when they end in `;` (legacy
//! entities without it, such as `&amp` alone, are left as they are).
//!
//! Sequences are `<start_of_text> tokens <end_of_text>`, zero-padded to the context length (77);
//! longer texts are truncated and the last position is set to `<end_of_text>`, as open_clip does.

use tch::Tensor;
use unicode_normalization::UnicodeNormalization;

/// CLIP's tokenizer with the reference clean-up; see the module docs.
pub struct ClipTokenizer {
    bpe: instant_clip_tokenizer::Tokenizer,
    context_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer").field("context_length", &self.context_length).finish()
    }
}

impl Default for ClipTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipTokenizer {
    /// The OpenAI vocabulary (49,408 tokens) with context length 77.
    pub fn new() -> Self {
        ClipTokenizer { bpe: instant_clip_tokenizer::Tokenizer::new(), context_length: 77 }
    }

    /// `<start_of_text>` (49406).
    pub fn start_of_text(&self) -> i64 {
        i64::from(self.bpe.start_of_text().to_u16())
    }

    /// `<end_of_text>` (49407).
    pub fn end_of_text(&self) -> i64 {
        i64::from(self.bpe.end_of_text().to_u16())
    }

    /// The same tokenizer for a text tower with `n` positions (CLIP: 77; tiny test models: fewer).
    pub fn with_context_length(mut self, n: usize) -> Self {
        self.context_length = n.max(2);
        self
    }

    /// Token ids of one text, with start and end tokens, truncated to the context length (the
    /// last kept position becomes `<end_of_text>`), not padded.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut tokens = vec![self.bpe.start_of_text()];
        self.bpe.encode(&clean_text(text), &mut tokens);
        tokens.push(self.bpe.end_of_text());
        tokens.truncate(self.context_length);
        if let Some(last) = tokens.last_mut() {
            *last = self.bpe.end_of_text();
        }
        tokens.into_iter().map(|t| i64::from(t.to_u16())).collect()
    }

    /// Token ids `(B, context_length)` i64 (77 unless changed) for a batch of texts, zero-padded.
    pub fn tokenize_batch<S: AsRef<str>>(&self, texts: &[S]) -> Tensor {
        let n = self.context_length;
        let mut ids = vec![0i64; texts.len() * n];
        for (row, text) in texts.iter().enumerate() {
            for (i, t) in self.encode(text.as_ref()).into_iter().enumerate() {
                ids[row * n + i] = t;
            }
        }
        // cpu: token ids; the caller moves them with its images.
        Tensor::from_slice(&ids).view([texts.len() as i64, n as i64])
    }
}

/// open_clip's clean-up before BPE (see the module docs for what of ftfy is reproduced).
/// Lower-casing happens inside the BPE encoder.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let once = html_escape::decode_html_entities(&fixed).into_owned();
    let twice = html_escape::decode_html_entities(&once).into_owned();
    twice.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// ftfy 6 `fix_text` with its default configuration, minus the mojibake heuristics: processed in
/// line segments; each segment is fixed repeatedly until it no longer changes.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy stops unescaping HTML for good once a segment contains '<' (it looks like markup).
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        let mut current = segment.to_string();
        loop {
            let mut next = if unescape { unescape_entities(&current) } else { current.clone() };
            next = next.chars().map(fix_c1).collect();
            next = fix_ligatures_and_width(&next);
            next = next.chars().map(uncurl).collect();
            next = next.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
            next = remove_terminal_escapes(&next);
            next = next.chars().filter(|c| !is_removed_control(*c)).collect();
            next = next.nfc().collect();
            if next == current {
                break;
            }
            current = next;
        }
        out.push_str(&current);
    }
    out
}

/// ftfy's `unescape_html`: `&name;` / `&#n;` / `&#xn;` sequences (1-24 alphanumerics).
fn unescape_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let body: String = tail[1..].chars().take(25).collect();
        let name_len = body.strip_prefix('#').unwrap_or(&body).chars().take_while(char::is_ascii_alphanumeric).count();
        let hash = usize::from(body.starts_with('#'));
        let end = 1 + hash + name_len; // byte length of "&#?name" (ASCII)
        if (1..=24).contains(&name_len) && tail.as_bytes().get(end) == Some(&b';') {
            let entity = &tail[..=end];
            let decoded = html_escape::decode_html_entities(entity);
            out.push_str(&decoded);
            rest = &tail[end + 1..];
        } else {
            out.push('&');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// C1 control characters decoded as Windows-1252 (ftfy `fix_c1_controls`).
fn fix_c1(c: char) -> char {
    const CP1252: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘',
        '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
    ];
    match c as u32 {
        0x80..=0x9f => CP1252[(c as u32 - 0x80) as usize],
        _ => c,
    }
}

/// ftfy `fix_latin_ligatures` and `fix_character_width` (fullwidth/halfwidth forms -> NFKC).
fn fix_ligatures_and_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let lig = match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => "",
        };
        if !lig.is_empty() {
            out.push_str(lig);
        } else if c == '\u{3000}' {
            out.push(' ');
        } else if ('\u{ff01}'..'\u{fff0}').contains(&c) {
            out.extend(std::iter::once(c).nfkc());
        } else {
            out.push(c);
        }
    }
    out
}

/// ftfy `uncurl_quotes`.
fn uncurl(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

/// ftfy `remove_terminal_escapes`: `ESC [ (digits|;)* letter`.
fn remove_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let mut j = i + 2;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ';') {
                j += 1;
            }
            if j < chars.len() && chars[j].is_ascii_alphabetic() {
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// ftfy `remove_control_chars`.
fn is_removed_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f | 0x206a..=0x206f | 0xfeff | 0xfff9..=0xfffc)
}
