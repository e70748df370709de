package train

import "github.com/ortq/ortq/train/optim"

// The optimizer's arithmetic (AdamW, the loss scaler, schedules, gradient clipping and
// accumulation) lives in train/optim, which imports no ONNX Runtime. These names keep
// train's API for the loop, the steppers and their callers.

type (
	Param            = optim.Param
	AdamW            = optim.AdamW
	AdamWConfig      = optim.AdamWConfig
	AdamWState       = optim.AdamWState
	GradScaler       = optim.GradScaler
	GradScalerConfig = optim.GradScalerConfig
	GradScalerState  = optim.GradScalerState
	GradAccumulator  = optim.GradAccumulator
	Schedule         = optim.Schedule
)

const (
	DefaultMaxGradNorm = optim.DefaultMaxGradNorm
	ScheduleConstant   = optim.ScheduleConstant
	ScheduleLinear     = optim.ScheduleLinear
	ScheduleCosine     = optim.ScheduleCosine
)

var (
	ErrNoTokens             = optim.ErrNoTokens
	NewAdamW                = optim.NewAdamW
	DefaultAdamWConfig      = optim.DefaultAdamWConfig
	AdamWStateFromTensors   = optim.AdamWStateFromTensors
	NewGradScaler           = optim.NewGradScaler
	DefaultGradScalerConfig = optim.DefaultGradScalerConfig
	NewGradAccumulator      = optim.NewGradAccumulator
	NewSchedule             = optim.NewSchedule
	WarmupSteps             = optim.WarmupSteps
)
