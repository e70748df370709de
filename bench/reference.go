package bench

import (
	"runtime"
	"time"
)

// referenceN is the size of ReferenceWork's square matmul.
const referenceN = 256

// ReferenceWork multiplies two fixed 256×256 float32 matrices in plain Go (i-k-j loop,
// single goroutine) and returns a checksum so the work cannot be optimised away. Its time
// is a yardstick of this machine's single-core speed, measured in the same process as the
// benchmark: `compare` divides throughput by it, so a CI runner that is 30 % slower today
// does not read as a regression. It deliberately uses no SIMD library: the yardstick must
// not change when dependencies do.
func ReferenceWork() float32 {
	const n = referenceN
	a := make([]float32, n*n)
	b := make([]float32, n*n)
	c := make([]float32, n*n)
	for i := range a {
		a[i] = float32(i%17) * 0.25
		b[i] = float32(i%13) * 0.5
	}
	for i := 0; i < n; i++ {
		ci := c[i*n : (i+1)*n]
		for k := 0; k < n; k++ {
			aik := a[i*n+k]
			bk := b[k*n : (k+1)*n]
			for j := range ci {
				ci[j] += aik * bk[j]
			}
		}
	}
	var s float32
	for _, v := range c {
		s += v
	}
	return s
}

// MeasureReference times ReferenceWork `reps` times and returns the fastest, in
// milliseconds: the minimum is the least noisy estimate of what the machine can do.
func MeasureReference(reps int) float64 {
	if reps <= 0 {
		reps = 7
	}
	best := time.Duration(1<<63 - 1)
	var sink float32 // kept alive so that the work cannot be dropped as unused
	for i := 0; i < reps; i++ {
		t0 := time.Now()
		sink += ReferenceWork()
		best = min(best, time.Since(t0))
	}
	runtime.KeepAlive(sink)
	return float64(best) / float64(time.Millisecond)
}
