package train

import (
	"bytes"
	"strings"
	"testing"
)

// TestProgressStopAndStart (issue 13 item 9): an interrupted run's bar stays at its step
// instead of showing 100 %, and a resumed run's bar starts at the checkpoint's step.
func TestProgressStopAndStart(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(ProgressOptions{Total: 30, Writer: &b, Throttle: -1, Bar: true})
	p.Update(ProgressUpdate{Step: 12, Loss: 1})
	p.Stop()
	if s := b.String(); strings.Contains(s, "100%") || strings.Contains(s, "30/30") || !strings.Contains(s, "12/30") {
		t.Errorf("interrupted at 12 of 30: %q", s)
	}
	b.Reset()
	p = NewProgress(ProgressOptions{Total: 30, Writer: &b, Throttle: -1, Start: 12, Bar: true})
	p.Update(ProgressUpdate{Step: 13, Loss: 1})
	if s := b.String(); strings.Contains(s, " 1/30") || !strings.Contains(s, "13/30") {
		t.Errorf("resumed at 12: %q", s)
	}
	if s := b.String(); !strings.Contains(s, "12/30") {
		t.Errorf("resumed bar did not start at 12: %q", s)
	}
}
