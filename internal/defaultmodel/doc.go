// Package defaultmodel embeds ortq's default model: a small Llama (4 layers, hidden 128,
// vocab 3072) pretrained on general English by testdata/gen/make_default_model.py, with its
// tokenizer. `ortq prepare` uses it when --model is "default" (the default), so `make demo`
// and the end-to-end test need nothing downloaded. README.md beside this file has the recipe
// and its measured perplexities.
package defaultmodel
