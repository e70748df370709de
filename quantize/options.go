package quantize

import "fmt"

// Defaults used for zero-valued Options fields.
const (
	DefaultBits      = 4
	DefaultBlockSize = 32
	MinBlockSize     = 16  // MatMulNBits requires block_size ≥ 16
	MaxBlockSize     = 256 // largest block `prepare --block-size` accepts
)

// Options selects the quantization format. The zero value means 4 bits, block 32, symmetric.
type Options struct {
	// Bits per code; only 4 is supported (0 means 4).
	Bits int
	// BlockSize is the number of consecutive K elements sharing a scale: a power of two in
	// 16..256 (0 means 32).
	BlockSize int
	// Asymmetric adds a per-block zero point (min/max quantization); otherwise the zero point is
	// the implicit 8 of MatMulNBits. Int4 only.
	Asymmetric bool
	// Type is the 4-bit data type: Int4 ("" means Int4: MatMulNBits' integer codes with a
	// scale per block), NF4 or FP4 (bitsandbytes' code tables with an absmax per block,
	// read by com.microsoft.MatMulBnb4; see bnb4.go).
	Type Type
	// DoubleQuant stores the NF4/FP4 absmax values in 8 bits with a second-level scale per
	// 256 blocks (bitsandbytes' compress_statistics); NF4/FP4 only.
	DoubleQuant bool
}

// Type is a 4-bit data type.
type Type string

// The 4-bit data types.
const (
	Int4 Type = "int4"
	NF4  Type = "nf4"
	FP4  Type = "fp4"
)

// Types lists the accepted Type values, the default first.
var Types = []Type{Int4, NF4, FP4}

// IsBnb4 reports whether t is one of bitsandbytes' table types (NF4, FP4).
func (t Type) IsBnb4() bool { return t == NF4 || t == FP4 }

// withDefaults fills zero-valued fields.
func (o Options) withDefaults() Options {
	if o.Bits == 0 {
		o.Bits = DefaultBits
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.Type == "" {
		o.Type = Int4
	}
	return o
}

// Validate reports the first field that is out of range, naming the allowed values.
// Zero-valued fields are valid and mean the defaults.
func (o Options) Validate() error {
	o = o.withDefaults()
	if o.Bits != 4 {
		return fmt.Errorf("quantize: Options.Bits = %d is not supported: the allowed value is 4 (0 means 4)", o.Bits)
	}
	bs := o.BlockSize
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("quantize: Options.BlockSize = %d is not allowed: use a power of two in %d..%d (16, 32, 64, 128, 256; 0 means %d)",
			bs, MinBlockSize, MaxBlockSize, DefaultBlockSize)
	}
	switch {
	case o.Type != Int4 && !o.Type.IsBnb4():
		return fmt.Errorf("quantize: Options.Type = %q is not supported: use int4, nf4 or fp4", o.Type)
	case o.Asymmetric && o.Type != Int4:
		return fmt.Errorf("quantize: Options.Asymmetric with Type %s: zero points are int4's; nf4 and fp4 are symmetric code tables", o.Type)
	case o.DoubleQuant && !o.Type.IsBnb4():
		return fmt.Errorf("quantize: Options.DoubleQuant with Type %s: double quantization compresses nf4/fp4 absmax values", o.Type)
	}
	return nil
}
