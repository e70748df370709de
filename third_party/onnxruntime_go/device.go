package onnxruntime_go

// This file was added in the ortq fork (see README.md). It wraps the parts of
// the C API needed to keep tensors in device (e.g. CUDA) memory: memory
// infos for any device, session allocators and the tensors they allocate,
// allocator statistics, the rest of the IoBinding API, run config entries and
// CopyTensors. Nothing here dereferences device memory from Go.

import (
	"fmt"
	"sort"
	"strconv"
	"unsafe"
)

// #include "onnxruntime_wrapper.h"
import "C"

// Wraps the OrtAllocatorType enum in C.
type AllocatorType int

const (
	// A plain allocator for the device, without ONNX Runtime's arena.
	AllocatorTypeDevice AllocatorType = C.OrtDeviceAllocator
	// ONNX Runtime's BFC arena on top of the device allocator.
	AllocatorTypeArena AllocatorType = C.OrtArenaAllocator
)

func (t AllocatorType) String() string {
	switch t {
	case AllocatorTypeDevice:
		return "OrtDeviceAllocator"
	case AllocatorTypeArena:
		return "OrtArenaAllocator"
	}
	return fmt.Sprintf("Unknown OrtAllocatorType: %d", int(t))
}

// Wraps the OrtMemType enum in C.
type MemoryType int

const (
	// Memory on the device itself (GPU memory for "Cuda").
	MemoryTypeDefault MemoryType = C.OrtMemTypeDefault
	// CPU memory used by a non-CPU execution provider as input.
	MemoryTypeCPUInput MemoryType = C.OrtMemTypeCPUInput
	// CPU-accessible (e.g. pinned) memory a non-CPU execution provider
	// outputs to.
	MemoryTypeCPUOutput MemoryType = C.OrtMemTypeCPUOutput
)

func (t MemoryType) String() string {
	switch t {
	case MemoryTypeDefault:
		return "OrtMemTypeDefault"
	case MemoryTypeCPUInput:
		return "OrtMemTypeCPUInput"
	case MemoryTypeCPUOutput:
		return "OrtMemTypeCPUOutput"
	}
	return fmt.Sprintf("Unknown OrtMemType: %d", int(t))
}

// The memory info names ONNX Runtime's built-in allocators use.
const (
	MemoryInfoNameCPU        = "Cpu"
	MemoryInfoNameCUDA       = "Cuda"
	MemoryInfoNameCUDAPinned = "CudaPinned"
)

// Wraps an OrtMemoryInfo, which describes where memory lives: the device
// name ("Cpu", "Cuda", ...), the device ID, and the memory type. Create one
// with NewMemoryInfo, NewCPUMemoryInfo or NewCUDAMemoryInfo, and Destroy it
// when it is no longer needed.
type MemoryInfo struct {
	m *C.OrtMemoryInfo
}

// Creates an OrtMemoryInfo (wraps OrtApi::CreateMemoryInfo). The name is one
// of ONNX Runtime's device names, e.g. MemoryInfoNameCPU or
// MemoryInfoNameCUDA.
func NewMemoryInfo(name string, allocatorType AllocatorType, deviceID int,
	memoryType MemoryType) (*MemoryInfo, error) {
	if !IsInitialized() {
		return nil, NotInitializedError
	}
	cName := C.CString(name)
	defer C.free(unsafe.Pointer(cName))
	var m *C.OrtMemoryInfo
	status := C.CreateMemoryInfo(cName, C.OrtAllocatorType(allocatorType),
		C.int(deviceID), C.OrtMemType(memoryType), &m)
	if status != nil {
		return nil, fmt.Errorf("Error creating memory info for %s device %d: %w",
			name, deviceID, statusToError(status))
	}
	return &MemoryInfo{m: m}, nil
}

// Returns a MemoryInfo for CPU memory, ONNX Runtime's arena allocator.
func NewCPUMemoryInfo() (*MemoryInfo, error) {
	return NewMemoryInfo(MemoryInfoNameCPU, AllocatorTypeArena, 0,
		MemoryTypeDefault)
}

// Returns a MemoryInfo for the memory of the given CUDA device, as the CUDA
// execution provider's default allocator describes it.
func NewCUDAMemoryInfo(deviceID int) (*MemoryInfo, error) {
	return NewMemoryInfo(MemoryInfoNameCUDA, AllocatorTypeDevice, deviceID,
		MemoryTypeDefault)
}

// Releases the OrtMemoryInfo.
func (m *MemoryInfo) Destroy() error {
	if m.m != nil {
		C.ReleaseOrtMemoryInfo(m.m)
		m.m = nil
	}
	return nil
}

// The fields of an OrtMemoryInfo, read back from ONNX Runtime.
type MemoryLocation struct {
	Name          string
	DeviceID      int
	MemoryType    MemoryType
	AllocatorType AllocatorType
}

func (l MemoryLocation) String() string {
	return fmt.Sprintf("%s:%d (%s, %s)", l.Name, l.DeviceID, l.MemoryType,
		l.AllocatorType)
}

func memoryLocation(m *C.OrtMemoryInfo) (MemoryLocation, error) {
	var name *C.char
	var id C.int
	var memType C.OrtMemType
	var allocType C.OrtAllocatorType
	status := C.GetMemoryInfoFields(m, &name, &id, &memType, &allocType)
	if status != nil {
		return MemoryLocation{}, fmt.Errorf("Error reading memory info: %w",
			statusToError(status))
	}
	return MemoryLocation{
		Name:          C.GoString(name),
		DeviceID:      int(id),
		MemoryType:    MemoryType(memType),
		AllocatorType: AllocatorType(allocType),
	}, nil
}

// Returns the name, device ID, memory type and allocator type of the memory
// info.
func (m *MemoryInfo) GetLocation() (MemoryLocation, error) {
	if m.m == nil {
		return MemoryLocation{}, fmt.Errorf("The MemoryInfo is not initialized")
	}
	return memoryLocation(m.m)
}

// Returns where a tensor's data lives (wraps OrtApi::GetTensorMemoryInfo).
func GetValueLocation(v Value) (MemoryLocation, error) {
	ortValue := v.GetInternals().ortValue
	if ortValue == nil {
		return MemoryLocation{}, fmt.Errorf("The value is not initialized")
	}
	var m *C.OrtMemoryInfo
	status := C.GetTensorMemoryInfo(ortValue, &m)
	if status != nil {
		return MemoryLocation{}, fmt.Errorf("Error getting the tensor's "+
			"memory info: %w", statusToError(status))
	}
	return memoryLocation(m)
}

// Wraps an OrtAllocator obtained from a session for a MemoryInfo. It is only
// valid while the session is, and must be Destroy'ed before the session is.
type Allocator struct {
	a *C.OrtAllocator
}

func createAllocator(s *C.OrtSession, info *MemoryInfo) (*Allocator, error) {
	if s == nil {
		return nil, fmt.Errorf("The session is not initialized")
	}
	if info == nil || info.m == nil {
		return nil, fmt.Errorf("The MemoryInfo is not initialized")
	}
	var a *C.OrtAllocator
	status := C.CreateAllocator(s, info.m, &a)
	if status != nil {
		return nil, fmt.Errorf("Error creating the session's allocator: %w",
			statusToError(status))
	}
	return &Allocator{a: a}, nil
}

// Returns the session's allocator for the memory info (wraps
// OrtApi::CreateAllocator): the allocator ONNX Runtime itself uses for that
// device in this session, so its statistics include the session's own
// allocations.
func (s *AdvancedSession) CreateAllocator(info *MemoryInfo) (*Allocator,
	error) {
	return createAllocator(s.ortSession, info)
}

// Like AdvancedSession.CreateAllocator.
func (s *DynamicAdvancedSession) CreateAllocator(info *MemoryInfo) (
	*Allocator, error) {
	return createAllocator(s.s.ortSession, info)
}

// Releases the OrtAllocator (not the session's allocator it refers to).
func (a *Allocator) Destroy() error {
	if a.a != nil {
		C.ReleaseAllocator(a.a)
		a.a = nil
	}
	return nil
}

// Returns the allocator's statistics as ONNX Runtime reports them (wraps
// OrtApi::AllocatorGetStats). The map is empty for allocators that keep no
// statistics (ONNX Runtime's arena does; a plain device allocator does not).
// ParseAllocatorStats converts it.
func (a *Allocator) GetStats() (map[string]string, error) {
	if a.a == nil {
		return nil, fmt.Errorf("The Allocator is not initialized")
	}
	var kvps *C.OrtKeyValuePairs
	var keys, values **C.char
	var count C.size_t
	status := C.AllocatorGetStats(a.a, &kvps, &keys, &values, &count)
	if status != nil {
		return nil, fmt.Errorf("Error getting allocator statistics: %w",
			statusToError(status))
	}
	defer C.ReleaseKeyValuePairs(kvps)
	toReturn := make(map[string]string, int(count))
	if count == 0 {
		return toReturn, nil
	}
	keySlice := unsafe.Slice(keys, int(count))
	valueSlice := unsafe.Slice(values, int(count))
	for i := range keySlice {
		toReturn[C.GoString(keySlice[i])] = C.GoString(valueSlice[i])
	}
	return toReturn, nil
}

// The statistics ONNX Runtime's arena allocator keeps (AllocatorStats in
// onnxruntime/core/framework/allocator.h). Sizes are in bytes.
type AllocatorStats struct {
	// The arena's limit; 0 or negative when there is none.
	Limit int64
	// Bytes currently handed out.
	InUse int64
	// Bytes the arena has reserved from the device (its total size).
	TotalAllocated int64
	// The peak of InUse.
	MaxInUse int64
	// The number of allocations served.
	NumAllocs int64
	// The number of Reserve calls (memory set aside outside the arena's
	// bins, e.g. for initializers).
	NumReserves int64
	// How many times the arena grew, and shrank.
	NumArenaExtensions int64
	NumArenaShrinkages int64
	// The largest single allocation.
	MaxAllocSize int64
	// Keys ONNX Runtime reported that have no field here (e.g.
	// "RequestedInUse" in newer releases), as reported.
	Other map[string]string
}

// Converts the key/value pairs Allocator.GetStats returns. Every value of a
// known key must be a decimal integer; unknown keys go to Other.
func ParseAllocatorStats(kv map[string]string) (AllocatorStats, error) {
	var s AllocatorStats
	fields := map[string]*int64{
		"Limit":              &s.Limit,
		"InUse":              &s.InUse,
		"TotalAllocated":     &s.TotalAllocated,
		"MaxInUse":           &s.MaxInUse,
		"NumAllocs":          &s.NumAllocs,
		"NumReserves":        &s.NumReserves,
		"NumArenaExtensions": &s.NumArenaExtensions,
		"NumArenaShrinkages": &s.NumArenaShrinkages,
		"MaxAllocSize":       &s.MaxAllocSize,
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p, ok := fields[k]
		if !ok {
			if s.Other == nil {
				s.Other = map[string]string{}
			}
			s.Other[k] = kv[k]
			continue
		}
		n, e := strconv.ParseInt(kv[k], 10, 64)
		if e != nil {
			return AllocatorStats{}, fmt.Errorf("Allocator statistic %s=%q "+
				"is not an integer: %w", k, kv[k], e)
		}
		*p = n
	}
	return s, nil
}

// A tensor whose memory an Allocator owns, which may be device memory that
// Go code must not dereference. It satisfies the Value interface, so it can
// be bound to an IoBinding or passed to CopyTensors. Tensors returned by
// IoBinding.GetBoundOutputAllocatedTensors are also of this type. Destroy it
// when no longer needed (before the session whose allocator it came from).
type AllocatedTensor struct {
	ortValue *C.OrtValue
	dataType C.ONNXTensorElementDataType
	shape    Shape
}

// Allocates a tensor of the given shape and element type with the allocator
// (wraps OrtApi::CreateTensorAsOrtValue). Its contents are uninitialized.
func NewAllocatedTensor(a *Allocator, s Shape,
	dataType TensorElementDataType) (*AllocatedTensor, error) {
	if !IsInitialized() {
		return nil, NotInitializedError
	}
	if a == nil || a.a == nil {
		return nil, fmt.Errorf("The Allocator is not initialized")
	}
	e := s.Validate()
	if e != nil {
		return nil, fmt.Errorf("Invalid tensor shape: %w", e)
	}
	var v *C.OrtValue
	status := C.CreateTensorWithAllocator(a.a,
		(*C.int64_t)(unsafe.Pointer(&s[0])), C.size_t(len(s)),
		C.ONNXTensorElementDataType(dataType), &v)
	if status != nil {
		return nil, fmt.Errorf("Error allocating a %s tensor of shape %s: %w",
			dataType, s, statusToError(status))
	}
	return &AllocatedTensor{
		ortValue: v,
		dataType: C.ONNXTensorElementDataType(dataType),
		shape:    s.Clone(),
	}, nil
}

// Wraps an OrtValue owned by the caller as an AllocatedTensor, reading its
// type and shape. Takes ownership of v: it is released on error.
func newAllocatedTensorFromOrtValue(v *C.OrtValue) (*AllocatedTensor, error) {
	var dt C.ONNXTensorElementDataType
	var rank C.size_t
	shape := make(Shape, 16)
	status := C.GetTensorElementTypeAndShape(v, &dt,
		(*C.int64_t)(unsafe.Pointer(&shape[0])), C.size_t(len(shape)), &rank)
	if status == nil && int(rank) > len(shape) {
		shape = make(Shape, int(rank))
		status = C.GetTensorElementTypeAndShape(v, &dt,
			(*C.int64_t)(unsafe.Pointer(&shape[0])), C.size_t(len(shape)),
			&rank)
	}
	if status != nil {
		C.ReleaseOrtValue(v)
		return nil, fmt.Errorf("Error reading the tensor's type and shape: %w",
			statusToError(status))
	}
	return &AllocatedTensor{
		ortValue: v,
		dataType: dt,
		shape:    shape[:int(rank)].Clone(),
	}, nil
}

func (t *AllocatedTensor) Destroy() error {
	if t.ortValue != nil {
		C.ReleaseOrtValue(t.ortValue)
		t.ortValue = nil
	}
	t.shape = nil
	return nil
}

func (t *AllocatedTensor) DataType() C.ONNXTensorElementDataType {
	return t.dataType
}

// Returns the tensor's element type as the Go TensorElementDataType.
func (t *AllocatedTensor) ElementType() TensorElementDataType {
	return TensorElementDataType(t.dataType)
}

func (t *AllocatedTensor) GetShape() Shape {
	return t.shape.Clone()
}

func (t *AllocatedTensor) GetInternals() *ValueInternalData {
	return &ValueInternalData{
		ortValue: t.ortValue,
	}
}

func (t *AllocatedTensor) GetONNXType() ONNXType {
	return ONNXTypeTensor
}

// Sets every byte of the tensor to 0 if its memory is CPU memory; does
// nothing for device memory, which Go cannot write (copy a zeroed host
// tensor there with CopyTensors instead).
func (t *AllocatedTensor) ZeroContents() {
	loc, e := GetValueLocation(t)
	if e != nil || loc.Name != MemoryInfoNameCPU {
		return
	}
	p, size, e := t.dataPointer()
	if e != nil || size == 0 {
		return
	}
	C.memset(p, 0, C.size_t(size))
}

func (t *AllocatedTensor) dataPointer() (unsafe.Pointer, uintptr, error) {
	if t.ortValue == nil {
		return nil, 0, fmt.Errorf("The tensor is not initialized")
	}
	var p unsafe.Pointer
	status := C.GetTensorMutableData(t.ortValue, &p)
	if status != nil {
		return nil, 0, fmt.Errorf("Error getting the tensor's data: %w",
			statusToError(status))
	}
	var size C.size_t
	status = C.GetTensorSizeInBytes(t.ortValue, &size)
	if status != nil {
		return nil, 0, fmt.Errorf("Error getting the tensor's size: %w",
			statusToError(status))
	}
	return p, uintptr(size), nil
}

// Returns the address of the tensor's data (wraps
// OrtApi::GetTensorMutableData) and its size in bytes. For device memory the
// address is a device pointer, only to be handed to code that runs on that
// device; Go code must never dereference it.
func (t *AllocatedTensor) GetDataPointer() (unsafe.Pointer, uintptr, error) {
	return t.dataPointer()
}

// Copies the contents of each src tensor to the dst tensor at the same index
// (wraps OrtApi::CopyTensors, synchronously). All src tensors must be in one
// device's memory and all dst tensors in one device's memory, with matching
// element types and sizes. The copy needs a data transfer between the two
// devices in the environment, which an execution provider library
// registered with RegisterExecutionProviderLibrary provides; appending an
// execution provider to SessionOptions does not register one, and ONNX
// Runtime 1.29's environment has none even for CPU to CPU (it fails with
// "Data transfer implementation between source and destination device was
// not found"). Within a session, an IoBinding copies instead: a host tensor
// bound as input to a device session is copied to the device by the run, and
// a device output is copied to a host tensor bound with BindOutput.
func CopyTensors(src, dst []Value) error {
	if !IsInitialized() {
		return NotInitializedError
	}
	if len(src) != len(dst) {
		return fmt.Errorf("CopyTensors got %d sources but %d destinations",
			len(src), len(dst))
	}
	if len(src) == 0 {
		return nil
	}
	// The arrays of pointers are passed to C, so they live in C memory (cgo
	// forbids passing Go memory that holds Go pointers; these hold C ones,
	// but C memory keeps this simple and obviously valid).
	n := len(src)
	ptrSize := C.size_t(unsafe.Sizeof((*C.OrtValue)(nil)))
	cSrc := (**C.OrtValue)(C.malloc(C.size_t(n) * ptrSize))
	cDst := (**C.OrtValue)(C.malloc(C.size_t(n) * ptrSize))
	defer C.free(unsafe.Pointer(cSrc))
	defer C.free(unsafe.Pointer(cDst))
	srcSlice := unsafe.Slice(cSrc, n)
	dstSlice := unsafe.Slice(cDst, n)
	for i := range src {
		if src[i] == nil || dst[i] == nil {
			return fmt.Errorf("CopyTensors: tensor pair %d is nil", i)
		}
		srcSlice[i] = src[i].GetInternals().ortValue
		dstSlice[i] = dst[i].GetInternals().ortValue
		if srcSlice[i] == nil || dstSlice[i] == nil {
			return fmt.Errorf("CopyTensors: tensor pair %d is not "+
				"initialized", i)
		}
	}
	status := C.CopyTensors(ortEnv, cSrc, cDst, C.size_t(n))
	if status != nil {
		return fmt.Errorf("Error copying tensors: %w", statusToError(status))
	}
	return nil
}

// Binds the named output to a device (wraps OrtApi::BindOutputToDevice):
// ONNX Runtime allocates the output in that device's memory on each run, at
// whatever shape the run produces. Read it back with
// GetBoundOutputAllocatedTensors (device or host) or GetBoundOutputValues
// (CPU memory only).
func (b *IoBinding) BindOutputToDevice(name string, info *MemoryInfo) error {
	if b.o == nil {
		return fmt.Errorf("The IoBinding is not initialized")
	}
	if info == nil || info.m == nil {
		return fmt.Errorf("The MemoryInfo is not initialized")
	}
	cName := C.CString(name)
	defer C.free(unsafe.Pointer(cName))
	status := C.BindOutputToDevice(b.o, cName, info.m)
	if status != nil {
		return statusToError(status)
	}
	return nil
}

// Waits for bound inputs written on another stream, where the execution
// provider needs it (wraps OrtApi::SynchronizeBoundInputs; a no-op on CPU).
func (b *IoBinding) SynchronizeBoundInputs() error {
	if b.o == nil {
		return fmt.Errorf("The IoBinding is not initialized")
	}
	return statusToError(C.SynchronizeBoundInputs(b.o))
}

// Waits until the bound outputs of the last run are complete (wraps
// OrtApi::SynchronizeBoundOutputs; a no-op on CPU).
func (b *IoBinding) SynchronizeBoundOutputs() error {
	if b.o == nil {
		return fmt.Errorf("The IoBinding is not initialized")
	}
	return statusToError(C.SynchronizeBoundOutputs(b.o))
}

// Like GetBoundOutputValues, but without copying: returns the OrtValues the
// binding holds, in whatever memory they are (device memory for outputs bound
// with BindOutputToDevice to a device), as AllocatedTensors. Each refers to
// the same memory as the binding's output until the next run replaces it, and
// must be Destroy'ed by the caller. Only tensor outputs are supported.
func (b *IoBinding) GetBoundOutputAllocatedTensors() ([]*AllocatedTensor,
	error) {
	if b.o == nil {
		return nil, fmt.Errorf("The IoBinding is not initialized")
	}
	var valuesBuffer **C.OrtValue
	var numValues C.size_t
	status := C.GetBoundOutputValues(b.o, &valuesBuffer, &numValues)
	if status != nil {
		return nil, statusToError(status)
	}
	if numValues == 0 {
		return []*AllocatedTensor{}, nil
	}
	valuesSlice := unsafe.Slice(valuesBuffer, int(numValues))
	toReturn := make([]*AllocatedTensor, 0, int(numValues))
	var e error
	for i, v := range valuesSlice {
		if e != nil {
			C.ReleaseOrtValue(v)
			continue
		}
		var t ONNXType
		t, e = getValueType(v)
		if e == nil && t != ONNXTypeTensor {
			e = fmt.Errorf("bound output %d is a %s, not a tensor", i, t)
		}
		if e != nil {
			C.ReleaseOrtValue(v)
			continue
		}
		var at *AllocatedTensor
		at, e = newAllocatedTensorFromOrtValue(v)
		if e != nil {
			e = fmt.Errorf("bound output %d: %w", i, e)
			continue
		}
		toReturn = append(toReturn, at)
	}
	status = C.FreeWithDefaultORTAllocator(unsafe.Pointer(valuesBuffer))
	if e == nil && status != nil {
		e = fmt.Errorf("Error freeing the buffer of output values: %w",
			statusToError(status))
	}
	if e != nil {
		for _, t := range toReturn {
			t.Destroy()
		}
		return nil, e
	}
	return toReturn, nil
}

// Adds a run config entry (wraps OrtApi::AddRunConfigEntry), e.g.
// "gpu_graph_id" to choose among CUDA graphs captured by a session with
// enable_cuda_graph. Keys are listed in
// onnxruntime_run_options_config_keys.h.
func (o *RunOptions) AddConfigEntry(key, value string) error {
	if o == nil || o.o == nil {
		return fmt.Errorf("The RunOptions are not initialized")
	}
	cKey := C.CString(key)
	defer C.free(unsafe.Pointer(cKey))
	cValue := C.CString(value)
	defer C.free(unsafe.Pointer(cValue))
	status := C.AddRunConfigEntry(o.o, cKey, cValue)
	if status != nil {
		return fmt.Errorf("Error adding run config entry %s=%s: %w", key,
			value, statusToError(status))
	}
	return nil
}

// Like RunWithBinding, with run options (which may be nil).
func (s *DynamicAdvancedSession) RunWithBindingAndOptions(b *IoBinding,
	opts *RunOptions) error {
	var optsPtr *C.OrtRunOptions
	if opts != nil {
		optsPtr = opts.o
	}
	status := C.RunSessionWithBindingAndOptions(s.s.ortSession, optsPtr, b.o)
	if status != nil {
		return statusToError(status)
	}
	return nil
}

// Returns a tensor of another element type and shape over t's memory (wraps
// OrtApi::CreateTensorWithDataAsOrtValue with t's memory info and address):
// e.g. the same 4-bit bytes as uint8 for MatMulNBits and as UINT4 for
// DequantizeLinear. The view does not own the memory; it must not outlive t.
// The new shape must fit in t's bytes (ONNX Runtime checks).
func (t *AllocatedTensor) NewView(dataType TensorElementDataType,
	s Shape) (*AllocatedTensor, error) {
	return t.NewViewAt(0, dataType, s)
}

// NewView from byte offset on: the view starts offset bytes into t's memory
// and must fit in the bytes after it.
func (t *AllocatedTensor) NewViewAt(offset uintptr,
	dataType TensorElementDataType, s Shape) (*AllocatedTensor, error) {
	if t.ortValue == nil {
		return nil, fmt.Errorf("The tensor is not initialized")
	}
	e := s.Validate()
	if e != nil {
		return nil, fmt.Errorf("Invalid tensor shape: %w", e)
	}
	var v *C.OrtValue
	status := C.CreateTensorView(t.ortValue, C.size_t(offset),
		C.ONNXTensorElementDataType(dataType),
		(*C.int64_t)(unsafe.Pointer(&s[0])), C.size_t(len(s)), &v)
	if status != nil {
		return nil, fmt.Errorf("Error creating a %s view of shape %s at byte %d: %w",
			dataType, s, offset, statusToError(status))
	}
	return &AllocatedTensor{
		ortValue: v,
		dataType: C.ONNXTensorElementDataType(dataType),
		shape:    s.Clone(),
	}, nil
}

// Supplies the initializer called name of every session created with these
// options (wraps OrtApi::AddInitializer): the session reads v instead of the
// graph's tensor of that name. v must not own its memory (a view from
// NewView, or a tensor over Go memory) and must outlive the sessions. ONNX
// Runtime uses v as it is when its device is the one the session places the
// initializer on, and copies it otherwise.
func (o *SessionOptions) AddInitializer(name string, v Value) error {
	if v == nil || v.GetInternals().ortValue == nil {
		return fmt.Errorf("The initializer %q is not initialized", name)
	}
	cName := C.CString(name)
	defer C.free(unsafe.Pointer(cName))
	status := C.AddSessionInitializer(o.o, cName, v.GetInternals().ortValue)
	if status != nil {
		return fmt.Errorf("Error adding the initializer %q: %w", name,
			statusToError(status))
	}
	return nil
}
