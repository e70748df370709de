// Package autodiff builds the backward graph of an ONNX graph in ONNX itself.
//
// ONNX Runtime 1.20+ ships no training build, so the gradient of every forward op is
// spelled out here with standard ops that a stock ONNX Runtime runs. The design follows
// the usual reverse-mode recipe:
//
//   - activity analysis: only nodes that lie on a path from a parameter we differentiate
//     with respect to (the LoRA tensors) to the loss get a gradient, so frozen weights cost
//     no gradient work at all;
//   - one gradient table keyed by (domain, op_type) and one no-gradient set, both in
//     table.go; the rules live in one file per op family, each with a one-line derivation
//     comment, and every rule has a finite-difference test case (a test checks this);
//   - one shared unbroadcast helper for numpy-style broadcasting;
//   - the driver checks that every rule returned a gradient for every input that needs one,
//     with the input's element type and static shape wherever both are known (a mismatch
//     is an error naming the node, op and input; the driver never copies the input's type
//     onto a gradient), and an active op without a rule is an error naming the node.
//
// Shapes are handled dynamically (Shape/Reshape on the fly) where the static type is
// unknown, so the backward graph keeps the forward graph's dynamic batch and sequence axes.
package autodiff
