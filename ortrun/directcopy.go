package ortrun

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// Direct copies (the default on CUDA; Options.Tuning.NoDirectCopy, ORTQX_DIRECT_COPY=0, turns them off): on CUDA the Copier
// moves tensors with ONNX Runtime's CopyTensors instead of running its Identity copy
// sessions, once the CUDA provider library is registered with the environment as an
// execution provider library (RegisterExecutionProviderLibrary; it exports
// CreateEpFactories), which gives the environment a host↔CUDA data transfer.
//
// Why: each copy session is a CUDA execution provider of its own, with its own stream,
// cuBLAS and cuDNN handles and workspaces; the device-resident step needs two, and its
// memory outside ONNX Runtime's arena measured 1.32 GiB on an H200 against 0.90 GiB for the
// host step's single session (Llama-3.2-3B shape, micro-batch 7).
//
// Measured on H200s (scripts/gpu-copies.sh, Llama-3.2-3B shape, micro-batch 7, CUDA-graph
// step): peak 5.56 GiB with direct copies against 5.88 GiB with copy sessions (outside the
// arena 0.86 against 1.18 GiB), the same step time, and identical losses over two GPUs.
//
// The first direct upload on each device is read back and compared; on any error or
// difference the Copier falls back to its copy sessions for good and says why (Copier.Note).
var (
	directOnce sync.Once
	directErr  error
)

// directCopyReady registers the CUDA provider library with the environment once; nil when
// CopyTensors can be tried.
func directCopyReady() error {
	directOnce.Do(func() {
		lib := LoadedLibrary()
		if lib == "" {
			directErr = errors.New("no ONNX Runtime library loaded")
			return
		}
		path := filepath.Join(filepath.Dir(lib), cudaProviderLibs[0])
		if err := ort.RegisterExecutionProviderLibrary("ortq_cuda_copy", path); err != nil {
			directErr = fmt.Errorf("registering %s as an execution provider library: %w", path, err)
		}
	})
	return directErr
}

// direct reports whether the Copier copies with CopyTensors; the first call on a CUDA
// device tries to set it up.
func (c *Copier) direct() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.directState == directUnknown {
		c.directState = directOff
		if provider, _, _ := ParseDevice(c.opts.Device); provider == "cuda" && !c.opts.Tuning.NoDirectCopy {
			if err := directCopyReady(); err != nil {
				c.note = "copies through copy sessions: " + err.Error()
			} else {
				c.directState = directProbe
			}
		}
	}
	return c.directState != directOff
}

// copyDirect copies src[i] into dst[i] with CopyTensors on the device's thread.
func (c *Copier) copyDirect(src, dst []ort.Value) error {
	provider, id, err := ParseDevice(c.opts.Device)
	if err != nil {
		return err
	}
	return runOn(provider, id, false, func() error { return ort.CopyTensors(src, dst) })
}

// uploadDirect is UploadAll through CopyTensors. The first upload is read back: on a
// failure or a difference the Copier turns direct copies off (ok false) and the caller
// copies through its sessions instead.
func (c *Copier) uploadDirect(dsts []*Buffer, srcs []*Tensor, ins, outs []ort.Value) (ok bool, err error) {
	if err := c.copyDirect(ins, outs); err != nil {
		return c.fallBack(err), nil
	}
	c.mu.Lock()
	probe := c.directState == directProbe
	c.mu.Unlock()
	if !probe {
		return true, nil
	}
	back, err := c.downloadDirect(dsts)
	if err != nil {
		return c.fallBack(err), nil
	}
	for i := range srcs {
		a, errA := srcs[i].bytes()
		b, errB := back[i].bytes()
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			return c.fallBack(fmt.Errorf("tensor %d read back differs from what was uploaded", i)), nil
		}
	}
	c.mu.Lock()
	c.directState = directOn
	c.mu.Unlock()
	return true, nil
}

// downloadDirect is DownloadAll through CopyTensors.
func (c *Copier) downloadDirect(srcs []*Buffer) ([]*Tensor, error) {
	return download(srcs, c.copyDirect)
}

// fallBack turns direct copies off after err and returns false.
func (c *Copier) fallBack(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.directState = directOff
	c.note = "copies through copy sessions: ONNX Runtime's CopyTensors failed: " + err.Error()
	return false
}

// Note says how the Copier copies when it fell back from, or never tried, direct copies on
// CUDA ("" otherwise).
func (c *Copier) Note() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.directState == directOn {
		return "copies with ONNX Runtime's CopyTensors (no copy sessions)"
	}
	return c.note
}

const (
	directUnknown = iota
	directOff
	directProbe // on, the first upload not yet read back
	directOn
)

// bytes is the tensor's data as raw bytes (a view, not a copy), for comparing bit for bit.
func (t *Tensor) bytes() ([]byte, error) {
	v := reflect.ValueOf(t.Data)
	if v.Kind() != reflect.Slice {
		return nil, fmt.Errorf("tensor data is a %T, not a slice", t.Data)
	}
	if v.Len() == 0 {
		return nil, nil
	}
	return unsafe.Slice((*byte)(v.UnsafePointer()), v.Len()*int(v.Type().Elem().Size())), nil
}
