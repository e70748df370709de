// Package preparetest holds a test helper for packages that need prepared artifacts. It lives
// apart from prepare so that the ortq binary does not link package testing.
package preparetest

import (
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
)

// Default prepares the embedded default model with prepare's default options, changed by
// edit when it is not nil (edit may also point Model at another graph), into a temporary
// directory of t, and returns that directory. It makes ONNX Runtime available first
// (ortruntest.Lib: the test is skipped without it unless $ORTQ_REQUIRE_ORT is set).
func Default(t testing.TB, edit func(*prepare.Options)) string {
	t.Helper()
	ortruntest.Lib(t)
	model, _, err := defaultmodel.Extract(filepath.Join(t.TempDir(), "model"))
	if err != nil {
		t.Fatal(err)
	}
	o := prepare.DefaultOptions()
	o.Model, o.Out = model, filepath.Join(t.TempDir(), "art")
	if edit != nil {
		edit(&o)
	}
	if _, err := prepare.Run(o, func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	return o.Out
}
