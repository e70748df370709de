// Package envconfig reads ortq's experiment knobs: the environment variables that tune ONNX
// Runtime and the training engine for measurements, and that no flag sets. They are read
// here and nowhere else, and checked; libraries (ortrun, train, bench) take the values as option
// fields and never read the environment themselves.
//
// The knobs are named ORTQX_*: ortq's flags can also be given as ORTQ_<FLAG> variables
// (viper's automatic environment, e.g. ORTQ_LORA_R for --lora-r), and no flag name can
// produce a variable beginning ORTQX_, so a knob never collides with a flag (ORTQ_PROFILE
// is `ortq bench --profile`, ORTQX_PROFILE the profiler prefix of every session).
package envconfig

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Prefix begins every knob's name.
const Prefix = "ORTQX_"

// Knob describes one variable for `ortq env` and the README.
type Knob struct {
	Name    string // the variable, with Prefix
	Default string // what applies when it is unset
	Usage   string // what it does and the values it takes
}

// Knobs is the table of every knob, in the order `ortq env` prints them.
var Knobs = []Knob{
	{"ORTQX_PROFILE", "unset (off)", "PREFIX: turn ONNX Runtime's profiler on for every session; each writes PREFIX_<date>.json (Chrome trace)"},
	{"ORTQX_SESSION_CONFIG", "unset", "key=value,key=value: extra ONNX Runtime session config entries for every session"},
	{"ORTQX_CUDA_OPTIONS", "unset", "key=value,key=value: CUDA execution provider options overriding ortq's (e.g. gpu_mem_limit, cudnn_conv_algo_search)"},
	{"ORTQX_MEM_PATTERN", "auto", "1 or 0: keep or drop ONNX Runtime's memory patterns (auto: on for CPU and for CUDA runs of ≤ 1024 tokens)"},
	{"ORTQX_ORT_VERBOSE", "0", "1: every session logs verbosely to stderr"},
	{"ORTQX_DIRECT_COPY", "1", "0: copy CUDA tensors through one-node Identity sessions instead of OrtApi::CopyTensors"},
	{"ORTQX_ARENA_MAX_DEAD_BYTES", "unset (ONNX Runtime's 128 MiB)", "N ≥ 0: the CUDA arena's max_dead_bytes_per_chunk"},
	{"ORTQX_SHARE_WEIGHTS", "1", "0: the device step session loads the 4-bit weights under both names instead of sharing one buffer"},
}

// Values holds the knobs as read.
type Values struct {
	Profile           string            // ORTQX_PROFILE ("" off)
	SessionConfig     map[string]string // ORTQX_SESSION_CONFIG
	CUDAOptions       map[string]string // ORTQX_CUDA_OPTIONS
	MemPattern        *bool             // ORTQX_MEM_PATTERN (nil: automatic)
	ORTVerbose        bool              // ORTQX_ORT_VERBOSE
	DirectCopy        bool              // ORTQX_DIRECT_COPY
	ArenaMaxDeadBytes *int              // ORTQX_ARENA_MAX_DEAD_BYTES (nil: ONNX Runtime's default)
	ShareWeights      bool              // ORTQX_SHARE_WEIGHTS
}

// renamed lists the knobs' former names, refused so that a script setting one is told
// instead of silently losing the setting. ORTQ_PROFILE is not among them: it is
// `ortq bench --profile`.
var renamed = []string{"SESSION_CONFIG", "CUDA_OPTIONS", "MEM_PATTERN", "ORT_VERBOSE", "DIRECT_COPY", "ARENA_MAX_DEAD_BYTES", "SHARE_WEIGHTS"}

// Parse reads the knobs through lookup (os.LookupEnv in Load). A value it cannot use is an
// error naming the variable and what it accepts.
func Parse(lookup func(string) (string, bool)) (Values, error) {
	for _, n := range renamed {
		if _, ok := lookup("ORTQ_" + n); ok {
			return Values{}, fmt.Errorf("ORTQ_%s is now named %s%s (experiment knobs are ORTQX_*: `ortq env` lists them)", n, Prefix, n)
		}
	}
	v := Values{DirectCopy: true, ShareWeights: true}
	get := func(name string) string { s, _ := lookup(name); return strings.TrimSpace(s) }
	var err error
	v.Profile = get("ORTQX_PROFILE")
	if v.SessionConfig, err = keyValues("ORTQX_SESSION_CONFIG", get("ORTQX_SESSION_CONFIG")); err != nil {
		return Values{}, err
	}
	if v.CUDAOptions, err = keyValues("ORTQX_CUDA_OPTIONS", get("ORTQX_CUDA_OPTIONS")); err != nil {
		return Values{}, err
	}
	if s := get("ORTQX_MEM_PATTERN"); s != "" && s != "auto" {
		b, err := boolean("ORTQX_MEM_PATTERN", s)
		if err != nil {
			return Values{}, err
		}
		v.MemPattern = &b
	}
	for _, b := range []struct {
		name string
		to   *bool
	}{{"ORTQX_ORT_VERBOSE", &v.ORTVerbose}, {"ORTQX_DIRECT_COPY", &v.DirectCopy}, {"ORTQX_SHARE_WEIGHTS", &v.ShareWeights}} {
		if s := get(b.name); s != "" {
			if *b.to, err = boolean(b.name, s); err != nil {
				return Values{}, err
			}
		}
	}
	if s := get("ORTQX_ARENA_MAX_DEAD_BYTES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return Values{}, fmt.Errorf("ORTQX_ARENA_MAX_DEAD_BYTES=%q: want a number of bytes ≥ 0", s)
		}
		v.ArenaMaxDeadBytes = &n
	}
	return v, nil
}

// Load reads the knobs from the environment.
func Load() (Values, error) { return Parse(os.LookupEnv) }

func boolean(name, s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, fmt.Errorf("%s=%q: want 1 or 0", name, s)
}

// keyValues parses "key=value,key=value" (empty entries are skipped).
func keyValues(name, s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%s entry %q: want key=value", name, kv)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	return m, nil
}
