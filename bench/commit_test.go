package bench

import (
	"runtime/debug"
	"testing"
)

// TestCommitOf: the report's commit is the binary's own VCS stamp, "+dirty" when modified.
func TestCommitOf(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"clean", []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "false"}}, rev},
		{"modified", []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}, rev + "+dirty"},
		{"no stamp", []debug.BuildSetting{{Key: "-buildvcs", Value: "false"}}, ""},
		{"modified without revision", []debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}, ""},
	} {
		if got := commitOf(&debug.BuildInfo{Settings: tc.settings}); got != tc.want {
			t.Errorf("%s: commitOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestCommitIsTheBinarys: a test binary carries no VCS stamp, so the commit is empty even
// though the current directory is inside the ortq checkout (it used to be `git rev-parse
// HEAD` of the current directory, whatever repository that was).
func TestCommitIsTheBinarys(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Skip("no build info")
	}
	want := commitOf(bi)
	if got := commit(); got != want {
		t.Errorf("commit() = %q, want the binary's own %q", got, want)
	}
	if got := DescribeMachine().Commit; got != want {
		t.Errorf("DescribeMachine().Commit = %q, want %q", got, want)
	}
}
