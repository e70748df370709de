//go:build !windows

package onnxruntime_go

// This file was added in the ortq fork (see README.md). It registers custom ops
// whose OrtCustomOp structs (kernels included) are written in C by the caller:
// the op definitions, kernel creation and compute functions stay in the
// caller's C code, which reaches the kernel context through API().

import (
	"fmt"
	"unsafe"
)

/*
#include <stdlib.h>
#include "onnxruntime_wrapper.h"
*/
import "C"

// API returns the loaded library's OrtApi (a const OrtApi *), for C code that
// implements custom ops; nil before InitializeEnvironment.
func API() unsafe.Pointer {
	return unsafe.Pointer(C.GetOrtApi())
}

// AddCustomOps adds a custom op domain named domain holding ops (each a
// pointer to an OrtCustomOp that outlives every session using it) to the
// options (OrtApi::CreateCustomOpDomain, CustomOpDomain_Add,
// AddCustomOpDomain). Sessions created with the options can then run nodes
// of that domain; the domain is released with the options.
func (o *SessionOptions) AddCustomOps(domain string, ops []unsafe.Pointer) error {
	if o.o == nil {
		return fmt.Errorf("The SessionOptions are not initialized")
	}
	cName := C.CString(domain)
	defer C.free(unsafe.Pointer(cName))
	var d *C.OrtCustomOpDomain
	if status := C.CreateCustomOpDomainWrapper(cName, &d); status != nil {
		return fmt.Errorf("creating custom op domain %q: %w", domain, statusToError(status))
	}
	for _, op := range ops {
		if status := C.CustomOpDomainAddWrapper(d, (*C.OrtCustomOp)(op)); status != nil {
			C.ReleaseCustomOpDomainWrapper(d)
			return fmt.Errorf("adding a custom op to domain %q: %w", domain, statusToError(status))
		}
	}
	if status := C.AddCustomOpDomainWrapper(o.o, d); status != nil {
		C.ReleaseCustomOpDomainWrapper(d)
		return fmt.Errorf("adding custom op domain %q: %w", domain, statusToError(status))
	}
	o.domains = append(o.domains, d)
	return nil
}
