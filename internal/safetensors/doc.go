// Package safetensors reads and writes safetensors files, the one implementation every
// ortq package uses: LoRA initial values (prepare), adapters and checkpoints (train) and
// Hugging Face checkpoints (hfimport).
//
// Reading goes through one header validator (ReadHeader): the length prefix is checked
// against MaxHeader and the file size before anything is allocated from it, then every
// entry's dtype, shape and data_offsets — shape × dtype size equals the byte length, with
// the same overflow bound (int64) everywhere — and the tensors must tile the data section
// exactly, with no gap and no overlap (hidden bytes or aliased tensors are signs of a
// corrupt or crafted file). Errors name the file and the tensor.
//
// ReadHeader reads only the header through an io.ReaderAt, so a multi-GB shard is read one
// tensor at a time (Entry.Section); ReadFile and Parse read a whole small file (adapters,
// checkpoints) into memory. Writing uses github.com/nlpodyssey/safetensors
// (SerializeToWriter, which orders tensors by alignment and pads the header to 8 bytes
// like the reference implementation) through an atomic rename.
package safetensors
