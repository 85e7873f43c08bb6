//! Splitting long texts into pieces the embedder takes whole.

use crate::tokenizer::Tokenizer;

/// A piece of a text: `text == input[start..end]` (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// A span that chunks never cut into, with its word-piece count.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
    /// Continues a word that was cut at character boundaries; word-piece
    /// counts are not additive across such a cut, so they are recounted.
    fragment: bool,
}

/// Splits `text` into chunks of at most `max_tokens` word pieces each (as
/// [`Tokenizer::count_tokens`] counts them; `[CLS]`/`[SEP]` not included),
/// cutting only between words: at whitespace, and around CJK ideographs,
/// which BERT treats as words of their own. A run of non-space text longer
/// than `max_tokens` by itself is cut at its punctuation, and a single word
/// longer than that at character boundaries. Each chunk after the first
/// starts with about `overlap_tokens` worth of the previous chunk's trailing
/// words, so text near a cut is embedded with context on both sides.
///
/// Empty or whitespace-only text gives no chunks; text within the budget
/// gives one. `max_tokens` below 1 is treated as 1.
pub fn chunk(
    tokenizer: &Tokenizer,
    text: &str,
    max_tokens: usize,
    overlap_tokens: usize,
) -> Vec<Chunk> {
    let max = max_tokens.max(1);
    let units = units(tokenizer, text, max);
    let mut chunks: Vec<Chunk> = Vec::new();
    // Word pieces in text[units[from].start..units[to].end], exactly.
    let span_tokens =
        |from: usize, to: usize| tokenizer.count_tokens(&text[units[from].start..units[to].end]);
    let mut s = 0;
    while let Some(first) = units.get(s) {
        let mut e = s + 1;
        let mut total = first.tokens;
        while let Some(u) = units.get(e) {
            let next = if u.fragment {
                span_tokens(s, e)
            } else {
                total + u.tokens
            };
            if next > max {
                break;
            }
            total = next;
            e += 1;
        }
        let end = units[e - 1].end;
        // Counts across a cut inside a word are not additive, so in rare
        // cases a chunk ends no further than the previous one; it adds
        // nothing and is left out.
        if chunks.last().is_none_or(|prev| end > prev.end) {
            chunks.push(Chunk {
                text: text[first.start..end].to_owned(),
                start: first.start,
                end,
            });
        }
        let Some(following) = units.get(e) else {
            break;
        };
        // Step back over trailing units worth at most overlap_tokens, always
        // moving past this chunk's start so the loop makes progress...
        let mut j = e;
        let mut back = 0;
        while j > s + 1 && back + units[j - 1].tokens <= overlap_tokens {
            j -= 1;
            back += units[j].tokens;
        }
        // ...and leaving room for the next unit, so the next chunk reaches
        // further than this one.
        let fits = |j: usize, back: usize| {
            if following.fragment {
                span_tokens(j, e) <= max
            } else {
                back + following.tokens <= max
            }
        };
        while j < e && !fits(j, back) {
            back -= units[j].tokens;
            j += 1;
        }
        s = j;
    }
    chunks
}

/// The text's words grouped into units of at most `max` word pieces.
fn units(tokenizer: &Tokenizer, text: &str, max: usize) -> Vec<Unit> {
    let words: Vec<_> = tokenizer.words(text).collect();
    let mut units = Vec::new();
    let mut i = 0;
    while i < words.len() {
        // A run: words not separated by whitespace or a CJK boundary.
        let mut j = i + 1;
        while j < words.len() && words[j].glued {
            j += 1;
        }
        let run = &words[i..j];
        let counts: Vec<usize> = run
            .iter()
            .map(|w| tokenizer.word_piece_count(&w.text))
            .collect();
        let total: usize = counts.iter().sum();
        if total <= max {
            units.push(Unit {
                start: run[0].start,
                end: run[run.len() - 1].end,
                tokens: total,
                fragment: false,
            });
        } else {
            // Too long for one chunk: allow cuts at its punctuation.
            for (w, &n) in run.iter().zip(&counts) {
                if n <= max {
                    units.push(Unit {
                        start: w.start,
                        end: w.end,
                        tokens: n,
                        fragment: false,
                    });
                } else {
                    split_word(tokenizer, text, w.start, w.end, max, &mut units);
                }
            }
        }
        i = j;
    }
    units
}

/// Cuts `text[start..end]` (one word) into pieces of at most `max` word
/// pieces, each as long as possible; a single character always makes a piece.
fn split_word(
    tokenizer: &Tokenizer,
    text: &str,
    start: usize,
    end: usize,
    max: usize,
    units: &mut Vec<Unit>,
) {
    let mut piece_start = start;
    // End and count of the longest acceptable piece so far.
    let mut accepted: Option<(usize, usize)> = None;
    let mut pos = start;
    while pos < end {
        let char_end = text[pos..end]
            .chars()
            .next()
            .map_or(end, |c| pos + c.len_utf8());
        let n = tokenizer.count_tokens(&text[piece_start..char_end]);
        match accepted {
            Some((piece_end, tokens)) if n > max => {
                units.push(Unit {
                    start: piece_start,
                    end: piece_end,
                    tokens,
                    fragment: piece_start > start,
                });
                piece_start = piece_end;
                accepted = None;
                // `pos` stays: this character starts the next piece.
            }
            _ => {
                accepted = Some((char_end, n));
                pos = char_end;
            }
        }
    }
    if let Some((piece_end, tokens)) = accepted {
        units.push(Unit {
            start: piece_start,
            end: piece_end,
            tokens,
            fragment: piece_start > start,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::tests::tiny;

    /// Checks the promises every chunking makes, returns the chunks.
    fn check(text: &str, max: usize, overlap: usize) -> Vec<Chunk> {
        let t = tiny();
        // Text outside every chunk may only be what the tokenizer ignores.
        let lost = |s: &str| t.count_tokens(s) == 0;
        let chunks = chunk(&t, text, max, overlap);
        let mut prev: Option<&Chunk> = None;
        for c in &chunks {
            assert_eq!(c.text, &text[c.start..c.end]);
            assert!(!c.text.trim().is_empty(), "{c:?}");
            assert_eq!(
                c.text,
                c.text.trim(),
                "chunks do not start or end with space"
            );
            assert!(
                t.count_tokens(&c.text) <= max,
                "{c:?} has {} tokens",
                t.count_tokens(&c.text)
            );
            match prev {
                None => assert!(lost(&text[..c.start]), "text before the first chunk"),
                Some(p) => {
                    assert!(c.start > p.start && c.end > p.end, "in order: {p:?} {c:?}");
                    assert!(
                        c.start <= p.end || lost(&text[p.end..c.start]),
                        "gap between {p:?} and {c:?}"
                    );
                }
            }
            prev = Some(c);
        }
        if let Some(last) = prev {
            assert!(lost(&text[last.end..]), "text after the last chunk");
        } else {
            assert!(lost(text));
        }
        chunks
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn empty_and_blank_text_give_no_chunks() {
        assert!(check("", 10, 2).is_empty());
        assert!(check(" \n\t ", 10, 2).is_empty());
        assert!(check("\u{0}", 10, 2).is_empty());
    }

    #[test]
    fn short_text_is_one_chunk_without_surrounding_space() {
        let text = "  hello, world!  ";
        let chunks = check(text, 10, 2);
        assert_eq!(texts(&chunks), vec!["hello, world!"]);
        assert_eq!((chunks[0].start, chunks[0].end), (2, 15));
    }

    #[test]
    fn cuts_between_words_with_overlap() {
        // 12 words of one piece each.
        let text = "a b cat the a b cat the a b cat the";
        let chunks = check(text, 5, 2);
        assert_eq!(
            texts(&chunks),
            vec![
                "a b cat the a",
                "the a b cat the",
                "cat the a b cat",
                "b cat the"
            ]
        );
        // Without overlap the chunks tile the text.
        let chunks = check(text, 5, 0);
        assert_eq!(
            texts(&chunks),
            vec!["a b cat the a", "b cat the a b", "cat the"]
        );
    }

    #[test]
    fn never_cuts_inside_a_word_that_fits() {
        // "cats" is two pieces; "unaffable" three.
        let text = "cats unaffable cats unaffable cats";
        for max in 3..12 {
            for overlap in 0..4 {
                for c in check(text, max, overlap) {
                    for w in c.text.split(' ') {
                        assert!(["cats", "unaffable"].contains(&w), "{w:?} in {c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn long_runs_are_cut_at_punctuation_then_characters() {
        // One whitespace-free run of 9 pieces.
        let text = "hello,world,hello,world,cat";
        let chunks = check(text, 3, 0);
        assert_eq!(texts(&chunks), vec!["hello,world", ",hello,", "world,cat"]);
        // A single word of 6 pieces with a budget of 4.
        let chunks = check("bbbbbb", 4, 0);
        assert_eq!(texts(&chunks), vec!["bbbb", "bb"]);
        let chunks = check("x bbbbbb y", 4, 1);
        assert!(chunks.len() >= 2);
    }

    #[test]
    fn cjk_text_is_cut_between_ideographs() {
        let text = "中文中文中文";
        let chunks = check(text, 4, 0);
        assert_eq!(texts(&chunks), vec!["中文中文", "中文"]);
    }

    #[test]
    fn overlap_larger_than_budget_still_progresses() {
        let text = "a b cat the a b cat the";
        let chunks = check(text, 3, 10);
        assert!(chunks.len() >= 3);
        let chunks = check(text, 1, 1);
        assert_eq!(chunks.len(), 8);
    }

    #[test]
    fn properties_hold_for_many_budgets() {
        let text =
            "  The cat, the CAT!  unaffable... 中文 hello\tworld\n\nab abb bbbbbbbbbb $$$ cats \
                    naïve café, hello-world,hello.world 🙂 x  ";
        for max in 1..30 {
            for overlap in 0..8 {
                let chunks = check(text, max, overlap);
                assert!(!chunks.is_empty());
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn properties_hold_for_random_texts(
            parts in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "a", "cat", "cats", "unaffable", "hello", "bbbbbbb", "中", "文",
                        "Café", "🙂", "xyz", "$", ",", "...", "\u{0}",
                    ]),
                    proptest::sample::select(vec!["", " ", "  ", "\n", "\t", ",", "-"]),
                ),
                0..40,
            ),
            max in 1usize..20,
            overlap in 0usize..8,
        ) {
            let text: String = parts.iter().flat_map(|(w, sep)| [*w, *sep]).collect();
            check(&text, max, overlap);
        }
    }
}
