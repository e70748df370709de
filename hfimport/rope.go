package hfimport

import "math"

// InvFreq returns the rotary inverse frequencies [head_dim/2] exactly as transformers'
// ROPE_INIT_FUNCTIONS compute them: in float32 tensors (default: 1 / theta^(2i/d); linear:
// divided by factor; llama3: low frequencies divided by factor, the band between smoothly
// interpolated). Every step is rounded to float32 like the torch ops it mirrors.
func InvFreq(headDim int, r Rope) []float32 {
	half := headDim / 2
	inv := make([]float32, half)
	for i := range inv {
		e := float32(2*i) / float32(headDim)        // arange(0, dim, 2).float() / dim
		p := float32(math.Pow(r.Theta, float64(e))) // base ** e (float32 result)
		inv[i] = float32(1) / p                     // 1.0 / (...)
	}
	switch r.Type {
	case "linear":
		f := float32(r.Factor)
		for i := range inv {
			inv[i] /= f
		}
	case "llama3":
		factor, lo, hi := float32(r.Factor), float32(r.LowFreqFactor), float32(r.HighFreqFactor)
		old := float64(r.OriginalMaxPos)
		lowWL := old / r.LowFreqFactor // python floats (float64)
		highWL := old / r.HighFreqFactor
		for i, f := range inv {
			wl := float32(2*math.Pi) / f // 2 * math.pi / inv_freq (float32 tensor)
			v := f
			if float64(wl) > lowWL {
				v = f / factor
			}
			smooth := (float32(old)/wl - lo) / (hi - lo)
			smoothed := float32((1-smooth)*v)/factor + float32(smooth*v)
			if !(float64(wl) < highWL) && !(float64(wl) > lowWL) {
				v = smoothed
			}
			inv[i] = v
		}
	}
	return inv
}
