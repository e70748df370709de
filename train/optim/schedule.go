package optim

import (
	"fmt"
	"math"
	"math/big"
)

// Schedule maps an optimizer step (0-based: the number of steps already
// taken) to a learning-rate multiplier. The loop uses lr = base·s(step) for
// the update that makes step+1; with warmup that makes the first update's
// lr 0, exactly as Hugging Face's Trainer (LambdaLR before its first
// scheduler.step()).
type Schedule func(step int) float64

// Schedule kinds accepted by NewSchedule (the --lr-scheduler values).
const (
	ScheduleConstant = "constant"
	ScheduleLinear   = "linear"
	ScheduleCosine   = "cosine"
)

// NewSchedule builds a schedule by name; warmup and total are in optimizer steps.
func NewSchedule(kind string, warmup, total int) (Schedule, error) {
	if warmup < 0 {
		return nil, fmt.Errorf("warmup steps %d must be ≥ 0", warmup)
	}
	switch kind {
	case ScheduleConstant:
		return ConstantSchedule(warmup), nil
	case ScheduleLinear, ScheduleCosine:
		if total <= 0 {
			return nil, fmt.Errorf("%s schedule needs the total number of optimizer steps, got %d", kind, total)
		}
		if kind == ScheduleLinear {
			return LinearSchedule(warmup, total), nil
		}
		return CosineSchedule(warmup, total, 0.5), nil
	}
	return nil, fmt.Errorf("unknown learning-rate schedule %q: use constant, linear or cosine", kind)
}

// warmupFactor is HF's float(step) / float(max(1, warmup)).
func warmupFactor(step, warmup int) float64 {
	return float64(step) / float64(max(1, warmup))
}

// ConstantSchedule is get_constant_schedule_with_warmup (warmup 0 gives
// get_constant_schedule).
func ConstantSchedule(warmup int) Schedule {
	return func(step int) float64 {
		if step < warmup {
			return warmupFactor(step, warmup)
		}
		return 1
	}
}

// LinearSchedule is get_linear_schedule_with_warmup: linear warmup from 0 to
// 1, then linear decay to 0 at total.
func LinearSchedule(warmup, total int) Schedule {
	return func(step int) float64 {
		if step < warmup {
			return warmupFactor(step, warmup)
		}
		return math.Max(0, float64(total-step)/float64(max(1, total-warmup)))
	}
}

// CosineSchedule is get_cosine_schedule_with_warmup (cycles 0.5 = one
// half-cosine from 1 to 0).
func CosineSchedule(warmup, total int, cycles float64) Schedule {
	return func(step int) float64 {
		if step < warmup {
			return warmupFactor(step, warmup)
		}
		progress := float64(step-warmup) / float64(max(1, total-warmup))
		return math.Max(0, 0.5*(1+cosCR(math.Pi*cycles*2*progress)))
	}
}

// bigPi is π to 330 bits, for argument reduction in cosCR.
var bigPi, _, _ = big.ParseFloat("3.14159265358979323846264338327950288419716939937510582097494459230781640628620899862803482534211706798"+
	"214808651328230664709384460955058223172535940812848111745028410270193852110555964462294895493038196", 10, 330, big.ToNearestEven)

// cosCR is cos(x) correctly rounded, as glibc's cos (which Python's math.cos
// calls) returns; Go's math.Cos can be an ulp off, which would make the
// cosine schedule differ from Hugging Face's in the last bit. It sums the
// Taylor series at 300 bits after reducing x by 2π; it runs once per
// optimizer step, so the cost does not matter.
func cosCR(x float64) float64 {
	k := math.Round(x / (2 * math.Pi))
	if math.IsNaN(x) || math.Abs(k) > 1<<20 {
		return math.Cos(x)
	}
	const prec = 300
	nf := func() *big.Float { return new(big.Float).SetPrec(prec) }
	r := nf().SetFloat64(x)
	twoPiK := nf().Mul(bigPi, nf().SetFloat64(2*k))
	r.Sub(r, twoPiK)
	r2 := nf().Mul(r, r)
	term := nf().SetInt64(1)
	sum := nf().SetInt64(1)
	for n := int64(1); n < 400; n++ {
		term.Mul(term, r2)
		term.Quo(term, nf().SetInt64((2*n-1)*(2*n)))
		term.Neg(term)
		sum.Add(sum, term)
		if term.Sign() == 0 || term.MantExp(nil) < -prec-8 {
			break
		}
	}
	f, _ := sum.Float64()
	return f
}

// WarmupSteps converts a warmup ratio to steps as HF's
// TrainingArguments.get_warmup_steps does: ceil(total·ratio).
func WarmupSteps(total int, ratio float64) int {
	return int(math.Ceil(float64(total) * ratio))
}
