package ortrun

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"
)

// NodePlacement is one node of the graph ONNX Runtime runs (after its optimizations) and the
// execution provider it was assigned to, e.g. {"node_linear_1", "MatMul",
// "CUDAExecutionProvider"}.
type NodePlacement struct {
	Name, OpType, Provider string
}

// Placement maps node name → execution provider ("CPUExecutionProvider",
// "CUDAExecutionProvider") for modelPath opened with opts. See Placements.
func Placement(modelPath string, opts Options) (map[string]string, error) {
	ps, err := Placements(modelPath, opts)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(ps))
	for _, p := range ps {
		m[p.Name] = p.Provider
	}
	return m, nil
}

// Placements opens modelPath with opts and reports where ONNX Runtime placed each node.
//
// How: ONNX Runtime states its placement only in its verbose log, while it creates a session
// (session_state.cc, VerifyEachNodeIsAssignedToAnEp: " Node(s) placed on [EP]. Number of
// nodes: N" followed by one "  OpType (name)" line per node; or, when one provider got them
// all, " All nodes placed on [EP]. Number of nodes: N" without names). onnxruntime_go offers
// no logging callback, so the session is created with verbose logging while file descriptor 2
// is redirected to a temporary file, which is parsed afterwards; lines that are not ONNX
// Runtime's verbose/info chatter are copied back to stderr. Other writes to stderr from this
// process during that window are delayed, not lost. In the "all nodes" case the names are those
// of the source graph's nodes (ORT's optimized graph, including any fused nodes, is then
// entirely on that provider). Nodes are named "OpType#i" when the graph leaves them unnamed.
// Names ORT gives nodes it inserts (MemcpyToHost, fused nodes) appear as it logs them.
func Placements(modelPath string, opts Options) ([]NodePlacement, error) {
	b, unmap, err := mapFile(modelPath)
	if err != nil {
		return nil, fmt.Errorf("placement: reading model %q: %w", modelPath, err)
	}
	ins, outs, err := graphIO(b)
	var nodes []NodePlacement
	if err == nil {
		nodes, err = graphNodes(b)
	}
	unmap()
	if err != nil {
		return nil, fmt.Errorf("placement: model %q: %w", modelPath, err)
	}
	opts.LogVerbose = true
	log, err := captureStderr(func() error {
		s, err := newSession(modelPath, ins, outs, opts, func(in, out []string, so *ort.SessionOptions) (*ort.DynamicAdvancedSession, error) {
			return ort.NewDynamicAdvancedSession(modelPath, in, out, so)
		})
		if err == nil {
			err = s.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("placement: %w", err)
	}
	return parsePlacement(log, nodes)
}

var (
	allPlacedRE  = regexp.MustCompile(`\] +All nodes placed on \[(\w+)\]\. Number of nodes: (\d+)`)
	somePlacedRE = regexp.MustCompile(`\] +Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)`)
	nodeLineRE   = regexp.MustCompile(`VerifyEachNodeIsAssignedToAnEp\]   (\S+) \((.*)\)\s*$`)
	ortChatterRE = regexp.MustCompile(`\[[VI]:onnxruntime:`)
)

// parsePlacement reads the placement out of ONNX Runtime's verbose session log. source is the
// source graph's nodes (names, op types), used when the log says all nodes went to one provider.
func parsePlacement(log []byte, source []NodePlacement) ([]NodePlacement, error) {
	var out []NodePlacement
	provider, want, seen, unnamed := "", 0, false, map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Text()
		if m := allPlacedRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[2])
			for _, p := range source {
				out = append(out, NodePlacement{Name: p.Name, OpType: p.OpType, Provider: m[1]})
			}
			if len(source) == 0 && n > 0 {
				return nil, fmt.Errorf("placement: ONNX Runtime placed %d nodes on %s but the source graph lists none", n, m[1])
			}
			seen = true
			continue
		}
		if m := somePlacedRE.FindStringSubmatch(line); m != nil {
			provider, seen = m[1], true
			want, _ = strconv.Atoi(m[2])
			continue
		}
		if m := nodeLineRE.FindStringSubmatch(line); m != nil && provider != "" && want > 0 {
			name := m[2]
			if name == "" {
				name = fmt.Sprintf("%s#%d", m[1], unnamed[m[1]])
				unnamed[m[1]]++
			}
			out = append(out, NodePlacement{Name: name, OpType: m[1], Provider: provider})
			want--
		}
	}
	if !seen {
		return nil, fmt.Errorf("placement: ONNX Runtime's verbose log has no node placement lines (its format may have changed from %s's session_state.cc)",
			ORTVersion)
	}
	return out, nil
}

// graphNodes lists GraphProto.node (field 1) names (NodeProto field 3) and op types (field 4).
func graphNodes(model []byte) ([]NodePlacement, error) {
	graph, err := findField(model, 7)
	if err != nil || graph == nil {
		return nil, err
	}
	var nodes []NodePlacement
	unnamed := map[string]int{}
	err = eachField(graph, func(num protowire.Number, _ protowire.Type, b []byte) error {
		if num != 1 {
			return nil
		}
		name, err := stringField(b, 3)
		if err != nil {
			return err
		}
		op, err := stringField(b, 4)
		if name == "" {
			name = fmt.Sprintf("%s#%d", op, unnamed[op])
			unnamed[op]++
		}
		nodes = append(nodes, NodePlacement{Name: name, OpType: op})
		return err
	})
	return nodes, err
}

var stderrMu sync.Mutex

// captureStderr runs fn with file descriptor 2 redirected to a temporary file and returns what
// was written there. ONNX Runtime's default logger writes to std::clog, flushing every line.
func captureStderr(fn func() error) ([]byte, error) {
	stderrMu.Lock()
	defer stderrMu.Unlock()
	f, err := os.CreateTemp("", "ortq-ort-log-*.txt")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	saved, err := syscall.Dup(2)
	if err != nil {
		return nil, fmt.Errorf("saving stderr: %w", err)
	}
	defer syscall.Close(saved)
	if err := syscall.Dup3(int(f.Fd()), 2, 0); err != nil {
		return nil, fmt.Errorf("redirecting stderr: %w", err)
	}
	runErr := fn()
	if err := syscall.Dup3(saved, 2, 0); err != nil {
		return nil, fmt.Errorf("restoring stderr: %w", err)
	}
	log, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, err
	}
	// Give back to stderr what the user would have seen without the verbose level.
	var rest strings.Builder
	for _, line := range strings.SplitAfter(string(log), "\n") {
		if line != "" && !ortChatterRE.MatchString(line) {
			rest.WriteString(line)
		}
	}
	if rest.Len() > 0 {
		os.Stderr.WriteString(rest.String())
	}
	if runErr != nil {
		return nil, runErr
	}
	return log, nil
}
