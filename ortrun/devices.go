package ortrun

import (
	"fmt"
	"strconv"
	"strings"
)

// DeviceHelp is what a bad --device value is told to use.
const DeviceHelp = "use cpu, cuda, cuda:N, a list such as cuda:0,cuda:1, or cuda:all"

// ParseDevices resolves a --device value into one device per training session. One device is
// returned as given. A list names several GPUs of this host, each once; cuda:all is every GPU
// CUDA can see (visible counts them; it is only called for cuda:all and for list entries, and
// 0 means it cannot tell). Repeated cpu entries are allowed on purpose: each is one more CPU
// session standing in for a GPU, which tests the multi-device path on any machine. Errors are
// one line beginning with --device.
func ParseDevices(value string, visible func() int) ([]string, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("--device %q: %s", value, fmt.Sprintf(format, a...))
	}
	v := strings.ToLower(strings.TrimSpace(value))
	if v == "cuda:all" {
		n := visible()
		if n == 0 {
			return nil, bad("no GPU visible (NVML finds none, or CUDA_VISIBLE_DEVICES hides them all): list devices as cuda:0,cuda:1, or use cpu")
		}
		devs := make([]string, n)
		for i := range devs {
			devs[i] = "cuda:" + strconv.Itoa(i)
		}
		return devs, nil
	}
	parts := strings.Split(v, ",")
	if len(parts) == 1 {
		if _, _, err := ParseDevice(value); err != nil {
			return nil, bad("%s", DeviceHelp)
		}
		return []string{value}, nil
	}
	var devs []string
	seen := map[string]bool{}
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "cuda:all" {
			return nil, bad("cuda:all stands alone, not in a list")
		}
		provider, id, err := ParseDevice(p)
		if p == "" || err != nil {
			return nil, bad("entry %q: %s", p, DeviceHelp)
		}
		d := provider
		if provider == "cuda" {
			d = "cuda:" + strconv.Itoa(id)
			if n := visible(); n > 0 && id >= n {
				return nil, bad("%s: only %d GPU(s) visible (cuda:0 … cuda:%d)", d, n, n-1)
			}
			if seen[d] {
				return nil, bad("%s is named twice: one training session per GPU", d)
			}
		}
		if len(devs) > 0 && (provider == "cpu") != (devs[0] == "cpu") {
			return nil, bad("mixes the CPU and GPUs: list GPUs only (or cpu entries only, for testing)")
		}
		seen[d] = true
		devs = append(devs, d)
	}
	return devs, nil
}
