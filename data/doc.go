// Package data turns user text into the padded int64 micro-batches that the
// ortq training and evaluation graphs consume.
//
// The pipeline is deliberately split into small steps so the CLI can report
// and test each one:
//
//  1. ReadDocuments reads .txt files (one file = one document, or one line =
//     one document when ReadOptions.LinePerDocument is set for --pack none) and
//     records: JSONL (.jsonl, .ndjson), JSON (.json: an array of objects, or one per
//     line), CSV/TSV with a header row, and Parquet (parquet-go; its string columns).
//     A record is text ("text"), prompt/completion, Alpaca instruction/input/output (the
//     Stanford Alpaca prompt), or chat "messages" rendered with the model's chat template
//     (package chat); the first record of a file decides, and every later one must fit,
//     or the file is refused naming the line (row) and field. Other extensions are
//     refused, not read as text; a file without one is sniffed (JSON or text).
//     Under TrainCompletion (--train-on completion, the default) a record's Document
//     carries the byte ranges of its completion or assistant turns (Trained).
//  2. Build tokenizes documents through the Encoder interface (the tokenize
//     package plugs in here, so this package has no tokenizer dependency),
//     packs them into MaxSeqLen blocks joined with EOS (or truncates one
//     example per document with NoPack; with Isolate it marks where each
//     document starts, and batches then give the documents of a row their own
//     ids in the attention mask, positions from 0 and no label at a document's
//     first token, so none is trained to predict it from the one before), checks lengths against the model and
//     splits examples into seeded train/eval sets.
//  3. Iterator yields shuffled, padded micro-batches (Batch) epoch after
//     epoch; its Position (epoch, index, seed) is all a checkpoint has to
//     store for a resume to continue with exactly the same batches.
//
// Labels follow Hugging Face: labels equal input ids with -100 at padding and at
// tokens outside the trained ranges (prompt masking, as TRL's completion-only
// collator), and the graph shifts them itself (logits[:, :-1] vs labels[:, 1:]).
// Build maps the byte ranges to tokens by encoding the text before each boundary
// (the prefix technique TRL uses) and keeps the mask inside each Example (an
// untrained token carries untrainedBit). Batch.Tokens is the number of labels the loss
// actually counts after that shift, which is what token-weighted gradient
// accumulation divides by and what the eval perplexity averages over.
//
// Randomness uses a hand-rolled Fisher-Yates over math/rand/v2's PCG source
// (not rand.Shuffle) because PCG's output is a fixed, documented algorithm
// while the helpers built on it may change between Go releases; a checkpoint
// must replay the same order after a toolchain upgrade.
package data
