// Package ortruntest holds test helpers for packages that run ONNX Runtime. It lives apart
// from ortrun so that the ortq binary does not link package testing.
package ortruntest

import (
	"testing"

	"github.com/ortq/ortq/ortrun"
)

// Lib makes ONNX Runtime available to a test: it Inits the library ortrun.FindLibrary("")
// finds. Without one the test is skipped, unless $ORTQ_REQUIRE_ORT is set (as `make test`
// and CI do), in which case it fails, so that nothing silently skips there.
func Lib(t testing.TB) {
	t.Helper()
	p, err := ortrun.FindLibrary("")
	if err != nil {
		if ortrun.Required() {
			t.Fatalf("%s is set but ONNX Runtime is unavailable: %v", ortrun.EnvRequire, err)
		}
		t.Skipf("skipping: %v (set %s=1 to make this a failure)", err, ortrun.EnvRequire)
	}
	if err := ortrun.Init(p); err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
}
