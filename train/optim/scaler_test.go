package optim

import (
	"math"
	"testing"
)

func TestGradScalerGrowthAndBackoff(t *testing.T) {
	type ev struct {
		inf       bool
		repeat    int
		wantScale float32
	}
	tests := []struct {
		name string
		evs  []ev
	}{
		{"1999 clean steps keep the scale", []ev{{false, 1999, 65536}}},
		{"2000 clean steps double it", []ev{{false, 2000, 131072}}},
		{"4000 clean steps double twice", []ev{{false, 4000, 262144}}},
		{"overflow halves and resets the tracker", []ev{{false, 1500, 65536}, {true, 1, 32768}, {false, 1999, 32768}, {false, 1, 65536}}},
		{"repeated overflow keeps halving", []ev{{true, 3, 8192}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewGradScaler(DefaultGradScalerConfig())
			if err != nil {
				t.Fatal(err)
			}
			if s.Scale() != 65536 {
				t.Fatalf("initial scale %v", s.Scale())
			}
			for _, e := range tc.evs {
				for i := 0; i < e.repeat; i++ {
					s.Update(e.inf)
				}
				if s.Scale() != e.wantScale {
					t.Fatalf("after %+v: scale %v, want %v", e, s.Scale(), e.wantScale)
				}
			}
		})
	}
}

func TestGradScalerNeverGrowsToInf(t *testing.T) {
	s, _ := NewGradScaler(GradScalerConfig{InitScale: 0x1p127, GrowthFactor: 2, BackoffFactor: 0.5, GrowthInterval: 1})
	s.Update(false)
	if s.Scale() != 0x1p127 {
		t.Errorf("scale grew to %v", s.Scale())
	}
}

func TestGradScalerUnscale(t *testing.T) {
	s, _ := NewGradScaler(DefaultGradScalerConfig())
	a := []float32{65536, -131072, 0}
	b := []float32{32768}
	if s.Unscale(a, b) {
		t.Error("finite gradients reported as overflow")
	}
	if a[0] != 1 || a[1] != -2 || a[2] != 0 || b[0] != 0.5 {
		t.Errorf("unscaled %v %v", a, b)
	}
	for _, bad := range []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())} {
		g := map[string][]float32{"x": {1, bad, 2}, "y": {3}}
		if !s.UnscaleMap(g) {
			t.Errorf("%v not detected", bad)
		}
	}
	s.Update(true)
	s.Update(true)
	if s.ConsecutiveSkips() != 2 {
		t.Errorf("ConsecutiveSkips = %d", s.ConsecutiveSkips())
	}
	s.Update(false)
	if s.ConsecutiveSkips() != 0 {
		t.Errorf("ConsecutiveSkips after a clean step = %d", s.ConsecutiveSkips())
	}
}

func TestGradScalerDisabled(t *testing.T) {
	s, _ := NewGradScaler(GradScalerConfig{Disabled: true})
	g := []float32{3, float32(math.NaN())}
	if !s.Unscale(g) || g[0] != 3 {
		t.Errorf("disabled scaler: found %v, g %v", s.Unscale(g), g)
	}
	s.Update(true)
	if s.Scale() != 1 || s.ConsecutiveSkips() != 1 {
		t.Errorf("disabled scaler changed scale to %v / skips %d", s.Scale(), s.ConsecutiveSkips())
	}
}

func TestGradScalerState(t *testing.T) {
	s, _ := NewGradScaler(DefaultGradScalerConfig())
	for i := 0; i < 1234; i++ {
		s.Update(false)
	}
	s.Update(true)
	for i := 0; i < 7; i++ {
		s.Update(false)
	}
	st := s.State()
	if st != (GradScalerState{Scale: 32768, GrowthTracker: 7}) {
		t.Errorf("state %+v", st)
	}
	s2, _ := NewGradScaler(DefaultGradScalerConfig())
	if err := s2.LoadState(st); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1993; i++ {
		s.Update(false)
		s2.Update(false)
	}
	if s.Scale() != 65536 || s2.Scale() != s.Scale() {
		t.Errorf("scales after resume %v / %v, want 65536", s.Scale(), s2.Scale())
	}
	for _, bad := range []GradScalerState{{Scale: 0}, {Scale: float32(math.Inf(1))}, {Scale: 1, GrowthTracker: 2000}, {Scale: 1, GrowthTracker: -1}} {
		if err := s2.LoadState(bad); err == nil {
			t.Errorf("LoadState(%+v) accepted", bad)
		}
	}
	for _, cfg := range []GradScalerConfig{{InitScale: 0, GrowthFactor: 2, BackoffFactor: 0.5, GrowthInterval: 1}, {InitScale: 1, GrowthFactor: 1,
		BackoffFactor: 0.5, GrowthInterval: 1}, {InitScale: 1, GrowthFactor: 2, BackoffFactor: 1, GrowthInterval: 1},
		{InitScale: 1, GrowthFactor: 2, BackoffFactor: 0.5}} {
		if _, err := NewGradScaler(cfg); err == nil {
			t.Errorf("NewGradScaler(%+v) accepted", cfg)
		}
	}
}
