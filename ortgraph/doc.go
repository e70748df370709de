// Package ortgraph holds ortq's view of an ONNX model: loading and saving with external
// data, an index over a graph (who produces and who consumes each value, what type it has),
// a small builder for emitting nodes (with type inference for the ops passes and gradient
// rules emit), and the pass manager that runs rewrite passes.
//
// The pass manager follows golang.org/x/tools/go/analysis: a Pass is a value with a Name,
// a Doc, the passes it Requires, the types of its options and of its result (OptionsType,
// ResultType; go/analysis's Flags and ResultType) and Run. RunPasses (NewContext +
// Context.Run) first validates the whole Requires closure (Validate: names, docs, unique
// names, no cycle) and the options of every pass it will run (present, of the declared
// type, valid by the type's Validate method), and then runs each pass once in dependency
// order, checking each result against its ResultType; a pass reads its options with the
// typed OptionsOf and the result of a pass it requires with the typed ResultOf, and a caller
// that already knows a result (prepare, for graphs cloned from one analysed base) hands it
// over with Context.Provide instead of running the pass again.
//
// The rewrite passes themselves live in ortgraph/passes and the reverse-mode autodiff in
// ortgraph/autodiff; both speak only in terms of this package, so a pass never touches the
// protobuf index bookkeeping directly.
//
// Why not a full in-memory IR (as onnxscript has): ortq's passes are few and local, and the
// protobuf messages are what ONNX Runtime consumes; keeping them as the single source of
// truth avoids a lossy conversion and keeps every field we do not model (metadata, doc
// strings, unknown fields) intact on the way back out.
package ortgraph
