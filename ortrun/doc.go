// Package ortrun runs ONNX models on ONNX Runtime 1.29 through github.com/yalue/onnxruntime_go:
// it finds the shared library (FindLibrary, Init), opens sessions on the CPU or CUDA execution
// provider (NewSession, Options) and runs them by input/output name on plain Go slices
// (Session.Run, Tensor). It exists so that the rest of ortq never touches cgo values, and so that
// the binding's gaps (no float16 or 0-d outputs, fixed output lists, one process-wide
// environment) are handled in one place. Placement reports which execution provider ONNX
// Runtime assigned each node to.
package ortrun
