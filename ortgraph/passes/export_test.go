package passes

// HalfSoftmaxGraph lets the external golden tests (package passes_test) build the same
// attention-idiom graphs as TestHalfSoftmax.
var HalfSoftmaxGraph = halfSoftmaxGraph

// RotaryGraph lets the golden tests build TestRotary's graphs.
var RotaryGraph = rotaryGraph

// GroupedKVGraph lets the golden tests build TestGroupedKV's graphs.
var GroupedKVGraph = groupedKVGraph

// DocMaskGraph lets the golden tests build the DocMask pass's graphs.
var DocMaskGraph = docMaskGraph
