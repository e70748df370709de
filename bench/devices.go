package bench

import (
	"fmt"
	"strings"

	"github.com/ortq/ortq/ortrun"
)

// devices splits --device into the devices a point trains on: one ("cpu", "cuda", "cuda:N"),
// or a comma-separated list for data parallelism over several GPUs of the host (each step then
// runs one micro-batch per device; "cpu,cpu" stands in for two GPUs in tests).
func devices(device string) ([]string, error) {
	if device == "" {
		return []string{"cpu"}, nil
	}
	var out []string
	seen := map[string]bool{}
	for _, d := range strings.Split(device, ",") {
		d = strings.TrimSpace(d)
		provider, id, err := ortrun.ParseDevice(d)
		if err != nil {
			return nil, fmt.Errorf("--device %q: %w", device, err)
		}
		if provider == "cuda" {
			d = fmt.Sprintf("cuda:%d", id)
			if seen[d] {
				return nil, fmt.Errorf("--device %q names %s twice", device, d)
			}
			seen[d] = true
		}
		if len(out) > 0 && (provider == "cpu") != (out[0] == "cpu") {
			return nil, fmt.Errorf("--device %q mixes the CPU with GPUs: list GPUs only (or cpu,cpu for tests)", device)
		}
		out = append(out, d)
	}
	return out, nil
}
