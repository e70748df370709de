package optim

import (
	"fmt"
	"math"
)

// GradScaler is torch.amp.GradScaler's dynamic loss scaling. The loop feeds
// Scale() to the graph as the loss-scale input (gradients come back
// multiplied by it), calls Unscale on the final gradients, skips the
// optimizer step when it reports non-finite values, and always calls Update.
//
// The scale is kept as float32 because torch keeps it in a float32 tensor;
// with the default factors it stays a power of two, so unscaling is exact.
type GradScaler struct {
	scale          float32
	growthFactor   float64
	backoffFactor  float64
	growthInterval int
	growthTracker  int
	enabled        bool
	// consecutiveSkips counts Update(true) calls in a row, so the loop can
	// give up after N (issue 7) without its own bookkeeping.
	consecutiveSkips int
}

// GradScalerConfig holds torch's constructor arguments.
type GradScalerConfig struct {
	InitScale      float64 `json:"init_scale"`
	GrowthFactor   float64 `json:"growth_factor"`
	BackoffFactor  float64 `json:"backoff_factor"`
	GrowthInterval int     `json:"growth_interval"`
	// Disabled makes the scale 1 forever (fp32 training); Unscale still
	// reports non-finite gradients so the loop can stop.
	Disabled bool `json:"disabled"`
}

// DefaultGradScalerConfig is torch's default: 2^16, ×2 every 2000 clean
// steps, ×0.5 on overflow.
func DefaultGradScalerConfig() GradScalerConfig {
	return GradScalerConfig{InitScale: 65536, GrowthFactor: 2, BackoffFactor: 0.5, GrowthInterval: 2000}
}

// NewGradScaler validates cfg like torch does.
func NewGradScaler(cfg GradScalerConfig) (*GradScaler, error) {
	if cfg.Disabled {
		return &GradScaler{scale: 1, enabled: false}, nil
	}
	if !(cfg.InitScale > 0) || math.IsInf(cfg.InitScale, 0) {
		return nil, fmt.Errorf("grad scaler: init scale %v must be positive and finite", cfg.InitScale)
	}
	if !(cfg.GrowthFactor > 1) {
		return nil, fmt.Errorf("grad scaler: growth factor %v must be > 1", cfg.GrowthFactor)
	}
	if !(cfg.BackoffFactor > 0 && cfg.BackoffFactor < 1) {
		return nil, fmt.Errorf("grad scaler: backoff factor %v must be in (0, 1)", cfg.BackoffFactor)
	}
	if cfg.GrowthInterval <= 0 {
		return nil, fmt.Errorf("grad scaler: growth interval %d must be positive", cfg.GrowthInterval)
	}
	return &GradScaler{
		scale:          float32(cfg.InitScale),
		growthFactor:   cfg.GrowthFactor,
		backoffFactor:  cfg.BackoffFactor,
		growthInterval: cfg.GrowthInterval,
		enabled:        true,
	}, nil
}

// Scale is the current loss scale (1 when disabled).
func (s *GradScaler) Scale() float32 { return s.scale }

// Enabled reports whether scaling is active.
func (s *GradScaler) Enabled() bool { return s.enabled }

// ConsecutiveSkips is the number of Update(true) calls since the last clean step.
func (s *GradScaler) ConsecutiveSkips() int { return s.consecutiveSkips }

// Unscale multiplies every gradient by 1/scale in place and reports whether
// any value (before scaling) is Inf or NaN. Like torch's
// _amp_foreach_non_finite_check_and_unscale_, it multiplies by the float32
// reciprocal computed in float64 rather than dividing, and keeps going after
// a non-finite value (the gradients are discarded anyway).
func (s *GradScaler) Unscale(grads ...[]float32) (foundInf bool) {
	inv := float32(1 / float64(s.scale))
	for _, g := range grads {
		for i, v := range g {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				foundInf = true
			}
			g[i] = v * inv
		}
	}
	return foundInf
}

// UnscaleMap is Unscale over a name→gradient map.
func (s *GradScaler) UnscaleMap(grads map[string][]float32) (foundInf bool) {
	for _, g := range grads {
		if s.Unscale(g) {
			foundInf = true
		}
	}
	return foundInf
}

// Update adjusts the scale after a step attempt, as torch's
// _amp_update_scale_: on overflow back off and reset the growth tracker; else
// count the clean step and grow after growthInterval of them (never to Inf).
func (s *GradScaler) Update(foundInf bool) {
	if foundInf {
		s.consecutiveSkips++
	} else {
		s.consecutiveSkips = 0
	}
	if !s.enabled {
		return
	}
	if foundInf {
		s.scale = float32(float64(s.scale) * s.backoffFactor)
		s.growthTracker = 0
		return
	}
	successful := s.growthTracker + 1
	if successful == s.growthInterval {
		grown := float32(float64(s.scale) * s.growthFactor)
		if !math.IsInf(float64(grown), 0) {
			s.scale = grown
		}
		s.growthTracker = 0
	} else {
		s.growthTracker = successful
	}
}

// GradScalerState is what a checkpoint stores (torch's state_dict: scale and
// _growth_tracker; the factors are configuration).
type GradScalerState struct {
	Scale            float32 `json:"scale"`
	GrowthTracker    int     `json:"growth_tracker"`
	ConsecutiveSkips int     `json:"consecutive_skips"`
}

// State returns the checkpointable state.
func (s *GradScaler) State() GradScalerState {
	return GradScalerState{Scale: s.scale, GrowthTracker: s.growthTracker, ConsecutiveSkips: s.consecutiveSkips}
}

// LoadState restores State output.
func (s *GradScaler) LoadState(st GradScalerState) error {
	if !(st.Scale > 0) || math.IsInf(float64(st.Scale), 0) {
		return fmt.Errorf("grad scaler state: invalid scale %v", st.Scale)
	}
	if st.GrowthTracker < 0 || (s.enabled && st.GrowthTracker >= s.growthInterval) {
		return fmt.Errorf("grad scaler state: growth tracker %d outside [0, %d)", st.GrowthTracker, s.growthInterval)
	}
	if !s.enabled && st.Scale != 1 {
		return fmt.Errorf("grad scaler state: scale %v saved with loss scaling on, but it is off now", st.Scale)
	}
	s.scale, s.growthTracker, s.consecutiveSkips = st.Scale, st.GrowthTracker, st.ConsecutiveSkips
	return nil
}
