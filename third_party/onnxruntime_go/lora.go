//go:build !windows

package onnxruntime_go

// This file was added in the ortq fork (see README.md). It wraps ONNX Runtime's
// LoRA adapter API: an adapter file (.onnx_adapter, flatbuffers) holds named
// parameters; activating it on a RunOptions feeds them as the session's inputs
// of the same names for the runs made with those options, so one base model
// serves several adapters without reloading.

import (
	"fmt"
	"unsafe"
)

/*
#include <dlfcn.h>
#include <stdlib.h>
#include "lora_wrapper.h"
*/
import "C"

// loraInit points the LoRA wrappers at the loaded library's API. It runs on
// every load: the environment may have been destroyed and the library loaded
// again since the last call (dlsym and GetApi cost next to nothing).
func loraInit() error {
	if !IsInitialized() {
		return NotInitializedError
	}
	name := C.CString("OrtGetApiBase")
	defer C.free(unsafe.Pointer(name))
	fn := C.dlsym(libraryHandle, name)
	if fn == nil {
		return fmt.Errorf("looking up OrtGetApiBase for the LoRA adapter API: %s", C.GoString(C.dlerror()))
	}
	if rc := C.LoraSetAPI(fn); rc != 0 {
		return fmt.Errorf("setting up the LoRA adapter API: error %d", int(rc))
	}
	return nil
}

// LoraAdapter wraps an OrtLoraAdapter. Destroy it once no RunOptions that
// activated it is used any more.
type LoraAdapter struct {
	a *C.OrtLoraAdapter
}

// NewLoraAdapter loads an .onnx_adapter file (wraps
// OrtApi::CreateLoraAdapter). The parameters stay in CPU memory.
func NewLoraAdapter(path string) (*LoraAdapter, error) {
	if err := loraInit(); err != nil {
		return nil, err
	}
	cPath := C.CString(path)
	defer C.free(unsafe.Pointer(cPath))
	var a *C.OrtLoraAdapter
	if status := C.LoraCreateAdapter(cPath, nil, &a); status != nil {
		return nil, fmt.Errorf("loading LoRA adapter %q: %w", path, statusToError(status))
	}
	return &LoraAdapter{a: a}, nil
}

// NewLoraAdapterFromBytes loads an adapter from the bytes of an .onnx_adapter
// file (wraps OrtApi::CreateLoraAdapterFromArray, which copies them).
func NewLoraAdapterFromBytes(b []byte) (*LoraAdapter, error) {
	if err := loraInit(); err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("loading LoRA adapter: no bytes")
	}
	var a *C.OrtLoraAdapter
	if status := C.LoraCreateAdapterFromArray(unsafe.Pointer(&b[0]), C.size_t(len(b)), nil, &a); status != nil {
		return nil, fmt.Errorf("loading LoRA adapter from %d bytes: %w", len(b), statusToError(status))
	}
	return &LoraAdapter{a: a}, nil
}

// Destroy releases the adapter (wraps OrtApi::ReleaseLoraAdapter).
func (l *LoraAdapter) Destroy() error {
	if l == nil || l.a == nil {
		return fmt.Errorf("The LoraAdapter is not initialized")
	}
	C.LoraReleaseAdapter(l.a)
	l.a = nil
	return nil
}

// AddActiveLoraAdapter makes runs with these options use the adapter's
// parameters as inputs (wraps OrtApi::RunOptionsAddActiveLoraAdapter). The
// adapter must outlive the options' use.
func (o *RunOptions) AddActiveLoraAdapter(l *LoraAdapter) error {
	if o == nil || o.o == nil {
		return fmt.Errorf("The RunOptions are not initialized")
	}
	if l == nil || l.a == nil {
		return fmt.Errorf("The LoraAdapter is not initialized")
	}
	if status := C.LoraRunOptionsAddActiveAdapter(o.o, l.a); status != nil {
		return fmt.Errorf("activating LoRA adapter: %w", statusToError(status))
	}
	return nil
}
