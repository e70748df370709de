// Package prepare turns a Llama ONNX graph into ortq's training artifacts: it runs the
// rewrite passes of ortgraph/passes (find Linears, quantize, LoRA, loss, backward) and
// writes a training graph, an evaluation graph, the weights once, the LoRA initial values
// and a manifest describing every graph input and output by role. `ortq train` reads
// nothing but this directory.
package prepare
