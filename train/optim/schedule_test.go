package optim

import (
	"math"
	"testing"
)

func TestSchedulesKnownPoints(t *testing.T) {
	tests := []struct {
		kind          string
		warmup, total int
		step          int
		want          float64
	}{
		{"constant", 0, 0, 0, 1},
		{"constant", 0, 0, 1000, 1},
		{"constant", 4, 0, 0, 0},
		{"constant", 4, 0, 2, 0.5},
		{"constant", 4, 0, 4, 1},
		{"linear", 10, 110, 0, 0},
		{"linear", 10, 110, 5, 0.5},
		{"linear", 10, 110, 10, 1},
		{"linear", 10, 110, 60, 0.5},
		{"linear", 10, 110, 110, 0},
		{"linear", 10, 110, 200, 0}, // clamped, never negative
		{"linear", 0, 4, 0, 1},
		{"linear", 0, 4, 1, 0.75},
		{"cosine", 10, 110, 5, 0.5},
		{"cosine", 10, 110, 10, 1},
		{"cosine", 10, 110, 60, 0.5},
		{"cosine", 10, 110, 35, 0.5 * (1 + math.Cos(math.Pi/4))},
		{"cosine", 10, 110, 110, 0},
		{"cosine", 0, 1, 0, 1},
	}
	for _, tc := range tests {
		s, err := NewSchedule(tc.kind, tc.warmup, tc.total)
		if err != nil {
			t.Fatal(err)
		}
		if got := s(tc.step); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("%s(warmup %d, total %d)(%d) = %v, want %v", tc.kind, tc.warmup, tc.total, tc.step, got, tc.want)
		}
	}
}

func TestNewScheduleErrors(t *testing.T) {
	for _, tc := range []struct {
		kind          string
		warmup, total int
	}{{"step", 0, 10}, {"linear", 0, 0}, {"cosine", 1, -1}, {"constant", -1, 0}} {
		if _, err := NewSchedule(tc.kind, tc.warmup, tc.total); err == nil {
			t.Errorf("NewSchedule(%q, %d, %d) accepted", tc.kind, tc.warmup, tc.total)
		}
	}
}

func TestWarmupSteps(t *testing.T) {
	for _, tc := range []struct {
		total int
		ratio float64
		want  int
	}{{100, 0.1, 10}, {101, 0.1, 11}, {100, 0, 0}, {7, 0.03, 1}} {
		if got := WarmupSteps(tc.total, tc.ratio); got != tc.want {
			t.Errorf("WarmupSteps(%d, %v) = %d, want %d", tc.total, tc.ratio, got, tc.want)
		}
	}
}

func TestCosCR(t *testing.T) {
	// Values where math.Cos is known to be one ulp off glibc (from the HF
	// reference run: 0.5·(1+cos(π·progress)) differed in the last bit).
	for _, x := range []float64{0, 1e-300, 0.5, 1, math.Pi / 3, math.Pi, 2 * math.Pi, -7.5, 100} {
		got, want := cosCR(x), math.Cos(x)
		if math.Abs(got-want) > 2e-16*math.Max(1, math.Abs(want)) {
			t.Errorf("cosCR(%v) = %v, math.Cos %v", x, got, want)
		}
	}
	if cosCR(0) != 1 || cosCR(math.Pi) != -1 {
		t.Errorf("cosCR(0) = %v, cosCR(π) = %v", cosCR(0), cosCR(math.Pi))
	}
}
