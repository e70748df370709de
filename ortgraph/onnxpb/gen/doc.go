// Command gen regenerates onnx.pb.go from onnx.proto in the current directory (the onnxpb
// package's, where `go generate` runs it) without a protoc binary: protocompile parses the
// schema in Go and protoc-gen-go (run through `go run`) receives the CodeGeneratorRequest
// protoc would have sent it.
//
//	go generate ./ortgraph/onnxpb   (or: make generate)
package main
