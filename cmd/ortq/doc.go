// Command ortq QLoRA-fine-tunes Llama-family ONNX models on a stock ONNX Runtime.
//
//	ortq prepare --model model.onnx --out artifacts/   # rewrite the graph once
//	ortq train --artifacts artifacts/ --data corpus.txt --tokenizer tokenizer.json
//
// Every flag can also come from a YAML file (--config) or an ORTQ_* environment
// variable (ORTQ_LORA_R=16); flags given on the command line win. Experiment knobs that
// no flag sets are ORTQX_* variables (internal/envconfig), listed by `ortq env`.
package main
