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
	// the implicit 8 of MatMulNBits.
	Asymmetric bool
}

// withDefaults fills zero-valued fields.
func (o Options) withDefaults() Options {
	if o.Bits == 0 {
		o.Bits = DefaultBits
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
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
	return nil
}
