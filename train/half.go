package train

import "github.com/ortq/ortq/internal/half"

// Half-precision conversions (internal/half holds the one implementation).
var (
	Float32ToFloat16  = half.Float32ToFloat16
	Float16ToFloat32  = half.Float16ToFloat32
	Float32ToBFloat16 = half.Float32ToBFloat16
	BFloat16ToFloat32 = half.BFloat16ToFloat32
	EncodeFloat16     = half.EncodeFloat16
	EncodeBFloat16    = half.EncodeBFloat16
)
