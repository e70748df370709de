//go:build !windows

package onnxruntime_go

// Tests of lora.go (added in the ortq fork). A real adapter round trip (ortq
// export writes the file, a session runs with it) is ortq's export package's
// TestONNXAdapterRoundTrip; here, the refusals.

import (
	"strings"
	"testing"
)

func TestLoraAdapterErrors(t *testing.T) {
	initDeviceTestRuntime(t)
	for _, c := range []struct {
		name string
		load func() (*LoraAdapter, error)
		want string
	}{
		{"missing file", func() (*LoraAdapter, error) { return NewLoraAdapter("test_data/no_such.onnx_adapter") }, "no_such.onnx_adapter"},
		{"not an adapter", func() (*LoraAdapter, error) {
			return NewLoraAdapterFromBytes([]byte("definitely not a flatbuffers adapter file"))
		}, "lora"},
		{"no bytes", func() (*LoraAdapter, error) { return NewLoraAdapterFromBytes(nil) }, "no bytes"},
	} {
		a, err := c.load()
		if err == nil {
			a.Destroy()
			t.Errorf("%s: loaded", c.name)
			continue
		}
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
	o, err := NewRunOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Destroy()
	if err := o.AddActiveLoraAdapter(&LoraAdapter{}); err == nil {
		t.Error("an uninitialized adapter was activated")
	}
}
