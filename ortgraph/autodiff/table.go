package autodiff

import "github.com/ortq/ortq/ortgraph/onnxpb"

// opKey names an op by (domain, op_type); the default domain is "".
type opKey struct{ domain, op string }

// gradients is every gradient rule, keyed by op. Each rule's derivation is the one-line
// comment at its function in the family file (grad_elementwise.go, grad_matmul.go, …).
// TestGradientCoverage fails when an op here has no finite-difference case in fd_test.go.
//
// It is assigned in init, not in its declaration, because some rules (Attention) expand into
// a subgraph and differentiate it through the driver, which reads gradients: Go rejects that
// as an initialization cycle.
var gradients map[opKey]GradFunc

func init() {
	gradients = map[opKey]GradFunc{
		// grad_elementwise.go
		{"", "Add"}:        gradAdd,
		{"", "Sub"}:        gradSub,
		{"", "Mul"}:        gradMul,
		{"", "Div"}:        gradDiv,
		{"", "Neg"}:        gradNeg,
		{"", "Sum"}:        gradSum,
		{"", "Identity"}:   gradIdentity,
		{"", "Cast"}:       gradCast,
		{"", "CastLike"}:   gradCastLike,
		{"", "Pow"}:        gradPow,
		{"", "Sqrt"}:       gradSqrt,
		{"", "Reciprocal"}: gradReciprocal,
		{"", "Sigmoid"}:    gradSigmoid,
		{"", "Exp"}:        gradExp,
		{"", "Log"}:        gradLog,
		{"", "Tanh"}:       gradTanh,
		{"", "Where"}:      gradWhere,
		{"", "Max"}:        gradMinMax,
		{"", "Min"}:        gradMinMax,

		// grad_matmul.go
		{"", "MatMul"}:                   gradMatMul,
		{"", "Gemm"}:                     gradGemm,
		{"com.microsoft", "MatMulNBits"}: gradMatMulNBits,
		{"", "DequantizeLinear"}:         gradDequantizeLinear,

		// grad_bnb4.go
		{"com.microsoft", "MatMulBnb4"}: gradMatMulBnb4,

		// grad_nn.go
		{"", "Softmax"}:                      gradSoftmax,
		{"", "LogSoftmax"}:                   gradLogSoftmax,
		{"", "Dropout"}:                      gradDropout,
		{"", "GatherElements"}:               gradGatherElements,
		{"", "RMSNormalization"}:             gradRMSNormalization,
		{"", "SimplifiedLayerNormalization"}: gradSimplifiedLayerNorm,

		// grad_reduce.go
		{"", "ReduceSum"}:  gradReduceSumMean,
		{"", "ReduceMean"}: gradReduceSumMean,

		// grad_shape.go
		{"", "Reshape"}:   gradReshapeLike,
		{"", "Flatten"}:   gradReshapeLike,
		{"", "Squeeze"}:   gradReshapeLike,
		{"", "Unsqueeze"}: gradReshapeLike,
		{"", "Transpose"}: gradTranspose,
		{"", "Expand"}:    gradExpand,
		{"", "Concat"}:    gradConcat,
		{"", "Split"}:     gradSplit,
		{"", "Slice"}:     gradSlice,
		{"", "Gather"}:    gradGather,

		// grad_attention.go
		{"", "Attention"}:       gradAttention,
		{"", "RotaryEmbedding"}: gradRotaryEmbedding,
	}
}

// noGradient is the set of ops whose outputs carry no gradient whatever their inputs
// (shapes, comparisons, integer indices, constants, random draws, piecewise-constant
// rounding): activity analysis stops at them.
var noGradient = map[opKey]bool{
	{"", "Shape"}: true, {"", "Size"}: true,
	{"", "Equal"}: true, {"", "Less"}: true, {"", "LessOrEqual"}: true, {"", "Greater"}: true, {"", "GreaterOrEqual"}: true,
	{"", "Not"}: true, {"", "And"}: true, {"", "Or"}: true, {"", "Xor"}: true,
	{"", "IsNaN"}: true, {"", "IsInf"}: true,
	{"", "ArgMax"}: true, {"", "ArgMin"}: true, {"", "NonZero"}: true,
	{"", "Range"}: true, {"", "ConstantOfShape"}: true, {"", "Constant"}: true, {"", "EyeLike"}: true,
	{"", "RandomNormal"}: true, {"", "RandomUniform"}: true, {"", "RandomNormalLike"}: true, {"", "RandomUniformLike"}: true,
	{"", "Bernoulli"}: true,
	{"", "Sign"}:      true, {"", "Floor"}: true, {"", "Ceil"}: true, {"", "Round"}: true,
}

// nonDifferentiable reports whether n is in noGradient.
func nonDifferentiable(n *onnxpb.NodeProto) bool {
	return noGradient[opKey{n.Domain, n.OpType}]
}
