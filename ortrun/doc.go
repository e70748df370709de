// Package ortrun runs ONNX models on ONNX Runtime 1.29 through github.com/yalue/onnxruntime_go:
// it finds the shared library (FindLibrary, Init), opens sessions on the CPU or CUDA execution
// provider (NewSession, Options; ParseDevice and ParseDevices read --device values) and runs them by input/output name on plain Go slices
// (Session.Run, Tensor). It exists so that the rest of ortq never touches cgo values, and so that
// the binding's gaps (no float16 or 0-d outputs, fixed output lists, one process-wide
// environment) are handled in one place. Placement reports which execution provider ONNX
// Runtime assigned each node to; Session.AllocatorStats what ONNX Runtime's arena holds.
//
// For a training step that keeps its state on the device, Session.NewBuffer allocates tensors
// in the session's own device memory, Session.Bind fixes which buffers every run reads and
// writes (with Options.CUDAGraph, each Binding is captured in a CUDA graph after
// GraphWarmupRuns plain runs and replayed), and a Copier moves data between Go memory and
// buffers. On CUDA it registers the CUDA provider library with the environment as an
// execution provider library and copies with ONNX Runtime's CopyTensors (appending the CUDA
// provider to session options gives CopyTensors no data transfer); on the CPU, when that
// fails, or with Options.Tuning.NoDirectCopy (ORTQX_DIRECT_COPY=0), it runs one-node Identity sessions instead.
//
// Options.Initializers hands a session buffers to use as initializers of the same names
// (OrtApi::AddInitializer), and Buffer.View reinterprets a buffer's bytes as another element
// type and shape, so one copy of 4-bit weights can serve as MatMulNBits' uint8 B and as
// DequantizeLinear's UINT4 data; LoadSharedInitializers builds such buffers from a model's
// external data (the device step of prepare's artifacts).
//
// Every ONNX Runtime call on a CUDA device — session creation, runs, bindings, copies,
// buffer allocation — runs on that device's own locked OS thread (thread.go): the CUDA
// provider keeps cuBLAS/cuDNN state per calling thread, and a CUDA-graph capture must not
// overlap any other CUDA call of the process.
//
// onnxruntime_go is used from a fork kept in third_party/onnxruntime_go (go.mod's replace
// directive; its README lists what changed). v1.27.0 binds only host tensors and exposes no
// allocator statistics, and a device-resident training step needs device memory infos, session
// allocators and the tensors they allocate, device IoBinding, run config entries and
// AllocatorGetStats. A small cgo package of our own on the same OrtApi was the alternative; the
// fork won because onnxruntime_go keeps the process-wide OrtEnv and the OrtSession and OrtValue
// pointers unexported, so an outside package could not bind a device tensor to a session that
// onnxruntime_go created, nor pass its values to ours, without either duplicating the whole
// session API or reaching into unexported fields. In the fork the additions are ordinary methods
// on upstream's types, written in upstream's style with their own tests, and can be offered
// upstream as they are.
package ortrun
