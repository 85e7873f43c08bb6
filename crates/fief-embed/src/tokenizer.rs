//! BERT uncased tokenization, matching Hugging Face `tokenizers` with
//! `BertNormalizer(clean_text, handle_chinese_chars, lowercase)` (accents
//! stripped because lowercase is on), `BertPreTokenizer` and `WordPiece`
//! (`##` continuation, 100-char word limit) — the pipeline in the model's
//! `tokenizer.json`, so the ids are the ones the model was trained on.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use unicode_categories::UnicodeCategories;

use crate::{EmbedError, MAX_TOKENS};

/// HF WordPiece's `max_input_chars_per_word`: longer words become `[UNK]`.
const MAX_WORD_CHARS: usize = 100;
const CONTINUATION: &str = "##";

/// A WordPiece vocabulary plus the special tokens the model needs.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: HashMap<String, i64>,
    cls: i64,
    sep: i64,
    pad: i64,
    unk: i64,
}

/// A tokenized text as the model takes it: `[CLS] pieces… [SEP]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<i64>,
    /// Word pieces past [`MAX_TOKENS`] were dropped.
    pub truncated: bool,
}

/// One pre-tokenized word: its normalized text and the byte span of the
/// original text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// No whitespace or CJK-character boundary separates it from the previous
    /// word (they were split apart only because one is punctuation).
    pub glued: bool,
}

impl Tokenizer {
    /// Reads a BERT `vocab.txt`: one token per line, id = line number.
    pub fn from_vocab_file(path: &Path) -> Result<Self, EmbedError> {
        let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_vocab_text(&text).map_err(|reason| EmbedError::InvalidVocab {
            path: path.to_owned(),
            reason,
        })
    }

    pub(crate) fn from_vocab_text(text: &str) -> Result<Self, String> {
        let mut vocab = HashMap::new();
        // `lines()` drops the final newline; trim_end as HF's vocab reader does.
        for (ix, line) in text.lines().enumerate() {
            let id = i64::try_from(ix).map_err(|_| "too many tokens".to_owned())?;
            vocab.insert(line.trim_end().to_owned(), id);
        }
        let special = |name: &str| {
            vocab
                .get(name)
                .copied()
                .ok_or_else(|| format!("it has no {name} token"))
        };
        Ok(Self {
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            pad: special("[PAD]")?,
            unk: special("[UNK]")?,
            vocab,
        })
    }

    /// `[CLS]`, the text's word pieces (at most `MAX_TOKENS - 2` of them),
    /// `[SEP]`.
    pub fn encode(&self, text: &str) -> Encoding {
        let budget = MAX_TOKENS - 2;
        let mut ids = Vec::with_capacity(32);
        ids.push(self.cls);
        let mut truncated = false;
        for word in self.words(text) {
            self.push_word_pieces(&word.text, &mut ids);
            if ids.len() > budget + 1 {
                // HF truncates the piece sequence, even inside a word.
                ids.truncate(budget + 1);
                truncated = true;
                break;
            }
        }
        ids.push(self.sep);
        Encoding { ids, truncated }
    }

    /// Number of word pieces in `text`, without truncation and without
    /// `[CLS]`/`[SEP]`.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.words(text)
            .map(|w| self.word_piece_count(&w.text))
            .sum()
    }

    pub(crate) fn pad_id(&self) -> i64 {
        self.pad
    }

    pub(crate) fn word_piece_count(&self, word: &str) -> usize {
        let mut ids = Vec::new();
        self.push_word_pieces(word, &mut ids);
        ids.len()
    }

    /// Normalization and pre-tokenization, keeping each word's span in the
    /// original text (the chunker cuts the original at those spans). Lazy,
    /// so `encode` stops reading a huge text once it has enough pieces.
    pub(crate) fn words<'a>(&self, text: &'a str) -> Words<'a> {
        Words {
            chars: text.char_indices(),
            cur: None,
            glue: false,
            ready: VecDeque::new(),
            normalized: Vec::with_capacity(4),
        }
    }

    /// Greedy longest-match-first WordPiece; a word that cannot be covered
    /// entirely, or is too long, is a single `[UNK]`.
    fn push_word_pieces(&self, word: &str, out: &mut Vec<i64>) {
        if word.chars().count() > MAX_WORD_CHARS {
            out.push(self.unk);
            return;
        }
        let first = out.len();
        let mut candidate = String::with_capacity(word.len() + CONTINUATION.len());
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                candidate.clear();
                if start > 0 {
                    candidate.push_str(CONTINUATION);
                }
                candidate.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(&candidate) {
                    found = Some(id);
                    break;
                }
                // Shorten by one character.
                end = word[..end]
                    .char_indices()
                    .next_back()
                    .map_or(start, |(i, _)| i);
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// Iterator over the words of a text; see [`Tokenizer::words`].
pub(crate) struct Words<'a> {
    chars: std::str::CharIndices<'a>,
    /// The word being built.
    cur: Option<Word>,
    /// Whether the next word touches the previous one.
    glue: bool,
    /// Finished words not yet returned.
    ready: VecDeque<Word>,
    normalized: Vec<char>,
}

impl Iterator for Words<'_> {
    type Item = Word;

    fn next(&mut self) -> Option<Word> {
        loop {
            if let Some(w) = self.ready.pop_front() {
                return Some(w);
            }
            let Some((start, c)) = self.chars.next() else {
                return self.cur.take();
            };
            self.feed(start, c);
        }
    }
}

impl Words<'_> {
    fn feed(&mut self, start: usize, c: char) {
        let end = start + c.len_utf8();
        if is_removed(c) {
            // Dropped without splitting: "a\u{0}b" is the word "ab".
            return;
        }
        if c.is_whitespace() {
            self.separate();
            return;
        }
        // BertNormalizer surrounds CJK ideographs with spaces.
        let cjk = is_chinese_char(c);
        if cjk {
            self.separate();
        }
        let mut normalized = std::mem::take(&mut self.normalized);
        normalized.clear();
        normalize_char(c, &mut normalized);
        for &n in &normalized {
            if n.is_whitespace() {
                self.separate();
            } else if is_punctuation(n) {
                self.flush();
                self.ready.push_back(Word {
                    start,
                    end,
                    text: n.to_string(),
                    glued: self.glue,
                });
                self.glue = true;
            } else {
                let glued = self.glue;
                let w = self.cur.get_or_insert_with(|| Word {
                    start,
                    end,
                    text: String::new(),
                    glued,
                });
                w.text.push(n);
                w.end = end;
                self.glue = true;
            }
        }
        self.normalized = normalized;
        if cjk {
            self.separate();
        }
    }

    /// Ends the current word.
    fn flush(&mut self) {
        if let Some(w) = self.cur.take() {
            self.ready.push_back(w);
        }
    }

    /// Ends the current word; the next one does not touch it.
    fn separate(&mut self) {
        self.flush();
        self.glue = false;
    }
}

/// BertNormalizer's clean_text drops NUL, U+FFFD and "control" characters:
/// categories Cc, Cf, Co except tab, newline and carriage return.
fn is_removed(c: char) -> bool {
    c == '\0' || c == '\u{fffd}' || (!matches!(c, '\t' | '\n' | '\r') && c.is_other())
}

/// Lowercasing implies strip_accents in BertNormalizer: NFD, drop
/// non-spacing marks (Mn), then lowercase, in that order.
fn normalize_char(c: char, out: &mut Vec<char>) {
    unicode_normalization::char::decompose_canonical(c, |d| {
        if !d.is_mark_nonspacing() {
            out.extend(d.to_lowercase());
        }
    });
}

/// BertPreTokenizer's punctuation: ASCII punctuation (which includes symbols
/// such as `$`, `+`, `^`) or any Unicode P* category.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// The CJK Unified Ideograph blocks BertNormalizer splits into single
/// characters (not Hangul, Hiragana or Katakana).
fn is_chinese_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny vocabulary: ids are line numbers.
    pub(crate) const VOCAB: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n,\n!\n.\n\
        cafe\nnaive\nun\n##aff\n##able\nthe\ncat\n中\n文\n##s\na\nb\n##b\nab\n$\n";

    pub(crate) fn tiny() -> Tokenizer {
        match Tokenizer::from_vocab_text(VOCAB) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    fn id(t: &Tokenizer, s: &str) -> i64 {
        t.vocab[s]
    }

    fn ids(t: &Tokenizer, text: &str) -> Vec<i64> {
        t.encode(text).ids
    }

    fn toks(t: &Tokenizer, names: &[&str]) -> Vec<i64> {
        let mut v = vec![t.cls];
        v.extend(names.iter().map(|n| id(t, n)));
        v.push(t.sep);
        v
    }

    #[test]
    fn special_ids_come_from_the_vocab() {
        let t = tiny();
        assert_eq!((t.pad, t.unk, t.cls, t.sep), (0, 1, 2, 3));
        assert_eq!(ids(&t, ""), vec![2, 3]);
        assert_eq!(ids(&t, " \t\n "), vec![2, 3]);
    }

    #[test]
    fn missing_special_token_is_an_error() {
        let err = Tokenizer::from_vocab_text("[PAD]\n[UNK]\n[CLS]\n").err();
        assert_eq!(err.as_deref(), Some("it has no [SEP] token"));
    }

    #[test]
    fn lowercases_and_splits_punctuation() {
        let t = tiny();
        assert_eq!(
            ids(&t, "Hello, WORLD!"),
            toks(&t, &["hello", ",", "world", "!"])
        );
        assert_eq!(
            ids(&t, "hello...world"),
            toks(&t, &["hello", ".", ".", ".", "world"])
        );
        // ASCII symbols count as punctuation too.
        assert_eq!(ids(&t, "$hello"), toks(&t, &["$", "hello"]));
    }

    #[test]
    fn strips_accents() {
        let t = tiny();
        assert_eq!(ids(&t, "Café NAÏVE"), toks(&t, &["cafe", "naive"]));
        // Combining mark written separately.
        assert_eq!(ids(&t, "cafe\u{301}"), toks(&t, &["cafe"]));
    }

    #[test]
    fn word_pieces_use_the_continuation_prefix() {
        let t = tiny();
        assert_eq!(ids(&t, "unaffable"), toks(&t, &["un", "##aff", "##able"]));
        assert_eq!(ids(&t, "cats"), toks(&t, &["cat", "##s"]));
        // Longest match first: "ab" beats "a" + "##b".
        assert_eq!(ids(&t, "ab abb"), toks(&t, &["ab", "ab", "##b"]));
    }

    #[test]
    fn unmatched_or_overlong_words_are_one_unk() {
        let t = tiny();
        // "catz": "cat" matches but "##z" does not, so the whole word is [UNK].
        assert_eq!(ids(&t, "catz hello"), vec![2, 1, id(&t, "hello"), 3]);
        assert_eq!(ids(&t, "🙂"), vec![2, 1, 3]);
        let long = "b".repeat(101);
        assert_eq!(ids(&t, &long), vec![2, 1, 3]);
        let ok = "b".repeat(100);
        assert_eq!(t.count_tokens(&ok), 100);
    }

    #[test]
    fn cjk_characters_are_words_of_their_own() {
        let t = tiny();
        assert_eq!(ids(&t, "the中文cat"), toks(&t, &["the", "中", "文", "cat"]));
    }

    #[test]
    fn control_characters_are_dropped_and_whitespace_splits() {
        let t = tiny();
        assert_eq!(ids(&t, "hel\u{0}lo\u{200b}"), toks(&t, &["hello"]));
        assert_eq!(
            ids(&t, "\thello\r\nworld\u{a0}cat "),
            toks(&t, &["hello", "world", "cat"])
        );
    }

    #[test]
    fn truncates_to_max_tokens_with_cls_and_sep() {
        let t = tiny();
        let text = "cat ".repeat(MAX_TOKENS + 10);
        let enc = t.encode(&text);
        assert_eq!(enc.ids.len(), MAX_TOKENS);
        assert!(enc.truncated);
        assert_eq!(enc.ids[0], t.cls);
        assert_eq!(enc.ids[MAX_TOKENS - 1], t.sep);
        assert_eq!(t.count_tokens(&text), MAX_TOKENS + 10);
        // Exactly at the limit: nothing dropped.
        let fits = "cat ".repeat(MAX_TOKENS - 2);
        let enc = t.encode(&fits);
        assert_eq!(enc.ids.len(), MAX_TOKENS);
        assert!(!enc.truncated);
        // The cut can fall inside a word, as in HF.
        let text = format!("{}cats", "cat ".repeat(MAX_TOKENS - 3));
        let enc = t.encode(&text);
        assert_eq!(enc.ids[MAX_TOKENS - 2], id(&t, "cat"));
        assert!(enc.truncated);
    }

    #[test]
    fn words_keep_original_spans() {
        let t = tiny();
        let text = "  Café,\u{0}x 中y";
        let words: Vec<Word> = t.words(text).collect();
        let spans: Vec<(&str, &str, bool)> = words
            .iter()
            .map(|w| (&text[w.start..w.end], w.text.as_str(), w.glued))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("Café", "cafe", false),
                (",", ",", true),
                ("x", "x", true),
                ("中", "中", false),
                ("y", "y", false),
            ]
        );
    }
}
