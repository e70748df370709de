package ortrun

import (
	"fmt"
	"unsafe"
)

// DataPointer is the address of b's memory (a device pointer for a CUDA session's buffer)
// and its size in bytes, for a library that works on device memory in place, such as an
// NCCL all-reduce. Go code must never dereference a device pointer; the address stays valid
// until b is closed.
func (b *Buffer) DataPointer() (unsafe.Pointer, int64, error) {
	if b == nil || b.t == nil {
		return nil, 0, fmt.Errorf("data pointer of a closed buffer")
	}
	p, n, err := b.t.GetDataPointer()
	if err != nil {
		return nil, 0, fmt.Errorf("%s buffer %v: %w", b.DType, b.Shape, err)
	}
	return p, int64(n), nil
}
