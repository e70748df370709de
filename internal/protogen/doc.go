// Command protogen regenerates ortgraph/onnxpb/onnx.pb.go from ortgraph/onnxpb/onnx.proto
// without a protoc binary: protocompile parses the schema in Go and protoc-gen-go (run
// through `go run`) receives the CodeGeneratorRequest protoc would have sent it.
//
//	go run ./internal/protogen
package main
