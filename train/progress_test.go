package train

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestProgressQuiet(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(ProgressOptions{Total: 10, Writer: &buf, Quiet: true})
	p.Update(ProgressUpdate{Step: 3, Loss: 2.5, TokensPerSec: 1000})
	p.Println("eval loss 2.4")
	p.Finish()
	if buf.Len() != 0 {
		t.Errorf("quiet progress wrote %q", buf.String())
	}
	if p.Last().Step != 3 || p.Last().Loss != 2.5 {
		t.Errorf("Last %+v", p.Last())
	}
}

func TestProgressShowsLossRateAndETA(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(ProgressOptions{Total: 10, Writer: &buf, Throttle: -1, Bar: true})
	p.Update(ProgressUpdate{Step: 4, Loss: 2.34567, TokensPerSec: 1234.5, LR: 2e-4, LossScale: 65536})
	p.Println("eval at step 4: loss 2.3")
	p.Finish()
	out := buf.String()
	for _, want := range []string{"loss 2.3457", "1234.5 tok/s", "lr 2.00e-04", "scale 65536", "4/10", "eval at step 4"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%q", want, out)
		}
	}
}

func TestProgressDescribe(t *testing.T) {
	for _, tc := range []struct {
		u    ProgressUpdate
		want string
	}{
		{ProgressUpdate{Loss: 1, TokensPerSec: 12345.6}, "loss 1.0000 | 12346 tok/s"},
		{ProgressUpdate{Loss: math.NaN(), TokensPerSec: 5}, "loss NaN | 5.0 tok/s"},
		{ProgressUpdate{Loss: 3, TokensPerSec: 1, LossScale: 1}, "loss 3.0000 | 1.0 tok/s"},
		{ProgressUpdate{Loss: 2, TokensPerSec: 1, LR: 1e-4, GradNorm: 1.23456}, "loss 2.0000 | 1.0 tok/s | lr 1.00e-04 | grad norm 1.23"},
	} {
		if got := tc.u.Describe(); got != tc.want {
			t.Errorf("Describe(%+v) = %q, want %q", tc.u, got, tc.want)
		}
	}
}

// TestProgressPlainLines: a Writer that is not a terminal gets one plain line every few
// steps (and at the first and last), never the bar's carriage-return redraws.
func TestProgressPlainLines(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(ProgressOptions{Total: 80, Writer: &buf, Throttle: -1})
	for step := 1; step <= 80; step++ {
		p.Update(ProgressUpdate{Step: step, Loss: 2.5, TokensPerSec: 1000})
		if step == 40 {
			p.Println("eval at step 40: loss 2.4")
		}
	}
	p.Finish()
	out := buf.String()
	if strings.Contains(out, "\r") {
		t.Errorf("plain output has carriage returns:\n%q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	// steps 1, 8, 16, …, 80 (every 80/10 = 8) and the eval line
	if len(lines) != 12 {
		t.Fatalf("%d lines, want 12:\n%s", len(lines), out)
	}
	for _, want := range []string{"training step 1/80 | loss 2.5000 | 1000.0 tok/s", "training step 8/80 |", "eval at step 40: loss 2.4",
		"training step 80/80 |"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// A resumed run with an unknown total, interrupted at 25: every 10 steps, no total, and
	// the step it stopped at.
	buf.Reset()
	p = NewProgress(ProgressOptions{Writer: &buf, Start: 5})
	for step := 6; step <= 25; step++ {
		p.Update(ProgressUpdate{Step: step, Loss: 1, TokensPerSec: 1})
	}
	p.Stop()
	if got := buf.String(); strings.Count(got, "\n") != 3 || !strings.Contains(got, "training step 10 |") || !strings.Contains(got,
		"training step 20 |") || !strings.Contains(got, "training step 25 |") {
		t.Errorf("unknown total: %q", got)
	}
}
