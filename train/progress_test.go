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
	p := NewProgress(ProgressOptions{Total: 10, Writer: &buf, Throttle: -1})
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
	} {
		if got := tc.u.Describe(); got != tc.want {
			t.Errorf("Describe(%+v) = %q, want %q", tc.u, got, tc.want)
		}
	}
}
