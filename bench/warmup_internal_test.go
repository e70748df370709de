package bench

import (
	"testing"

	"github.com/ortq/ortq/train"
)

// warmer is a Stepper that is also a train.Warmer.
type warmer struct {
	train.Stepper
	n int
}

func (w warmer) WarmupMicroBatches() int { return w.n }

// TestExtendWarmup: a point's warm-up grows to cover a stepper's capture micro-batches, with a
// note, and never shrinks.
func TestExtendWarmup(t *testing.T) {
	for _, c := range []struct {
		warmup, capture, want int
		note                  bool
	}{{3, 6, 6, true}, {8, 6, 8, false}, {3, 0, 3, false}} {
		pt := &Point{Warmup: c.warmup}
		extendWarmup(pt, warmer{n: c.capture})
		if pt.Warmup != c.want || (len(pt.Notes) > 0) != c.note {
			t.Errorf("warm-up %d, capture %d: got %d, notes %q", c.warmup, c.capture, pt.Warmup, pt.Notes)
		}
	}
	pt := &Point{Warmup: 2}
	extendWarmup(pt, nil)
	if pt.Warmup != 2 {
		t.Errorf("a stepper that is no Warmer changed the warm-up to %d", pt.Warmup)
	}
}
