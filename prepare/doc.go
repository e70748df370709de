// Package prepare turns a Llama ONNX graph into ortq's training artifacts. Run goes in
// phases: check the options and the output directory; load the model (refusing graphs it
// cannot train); build the graphs — the graph-wide passes of ortgraph/passes (HalfSoftmax,
// Quantize with FindLinears, Rotary, ORTCompat, RMSNorm) on the base, then LoRA and the loss on
// clones of it for the evaluation graph, with DQForward and Backward for the training
// graph, plus Recompute for the recomputing training graph, and DeviceStep on a copy of
// that for the device-resident step; describe every graph's inputs and outputs by role in
// the manifest; and write the four graphs, the weights once (shared by all of them), the
// LoRA initial values and the manifest into a temporary directory that replaces the output
// at the end. `ortq train` reads nothing but this directory.
package prepare
