package bench

import (
	"github.com/ortq/ortq/internal/gpumem"
	"github.com/ortq/ortq/ortrun"
)

// devices splits --device into the devices a point trains on (ortrun.ParseDevices, as
// `ortq train` does): one, or a list of GPUs of this host trained data-parallel, each step
// then running one micro-batch per device ("cpu,cpu" stands in for two GPUs in tests).
func devices(device string) ([]string, error) {
	if device == "" {
		return []string{"cpu"}, nil
	}
	return ortrun.ParseDevices(device, gpumem.Visible)
}
