// Package devname parses ortq's device names ("cpu", "cuda", "cuda:N"). It is the one
// home of the syntax, shared by the runtime (ortrun) and the GPU memory helpers
// (internal/gpumem), which must not depend on the runtime.
package devname

import (
	"fmt"
	"strconv"
	"strings"
)

// Parse splits "cpu", "cuda" or "cuda:N" into the provider and the CUDA device id.
func Parse(device string) (provider string, id int, err error) {
	switch d := strings.ToLower(strings.TrimSpace(device)); {
	case d == "" || d == "cpu":
		return "cpu", 0, nil
	case d == "cuda" || d == "gpu":
		return "cuda", 0, nil
	case strings.HasPrefix(d, "cuda:"):
		n, err := strconv.Atoi(d[len("cuda:"):])
		if err != nil || n < 0 {
			return "", 0, fmt.Errorf("device %q: want cuda:N with N a device number ≥ 0", device)
		}
		return "cuda", n, nil
	}
	return "", 0, fmt.Errorf("device %q: want cpu, cuda or cuda:N", device)
}
