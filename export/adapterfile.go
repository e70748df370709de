package export

import "fmt"

// WriteAdapterFile writes ad as ONNX Runtime's .onnx_adapter file.
func WriteAdapterFile(path string, ad *Adapter, dt int32) error {
	return fmt.Errorf("%s: .onnx_adapter not written yet", path)
}
