package ortrun

import "testing"

// testLib is ortruntest.Lib for this package's own tests, which cannot import ortruntest
// (it imports ortrun).
func testLib(t testing.TB) {
	t.Helper()
	p, err := FindLibrary("")
	if err != nil {
		if Required() {
			t.Fatalf("%s is set but ONNX Runtime is unavailable: %v", EnvRequire, err)
		}
		t.Skipf("skipping: %v (set %s=1 to make this a failure)", err, EnvRequire)
	}
	if err := Init(p); err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
}
