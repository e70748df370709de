package prepare

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortrun"
)

// PlacementReport is where ONNX Runtime put the nodes of one artifacts graph.
type PlacementReport struct {
	File string
	// ByProvider counts nodes per execution provider.
	ByProvider map[string]int
	// ShapeOnCPU lists nodes kept on the CPU that compute only integer or boolean values
	// (shapes, indices, masks' index math): ONNX Runtime places these there by design.
	ShapeOnCPU []string
	// ComputeOnCPU lists nodes producing floating-point values on the CPU: each one is a
	// kernel the CUDA provider lacks and costs copies between devices.
	ComputeOnCPU []string
	// Inserted lists nodes ONNX Runtime added (memory copies, fused nodes) found on the CPU.
	Inserted []string
}

// CheckPlacement opens every graph of an artifacts directory with opts (a CUDA device)
// and classifies the nodes ONNX Runtime placed on the CPU.
func CheckPlacement(dir string, opts ortrun.Options) ([]PlacementReport, error) {
	man, err := manifest.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	files := []string{man.Eval.File, man.Train.File}
	if man.TrainRecompute != nil {
		files = append(files, man.TrainRecompute.File)
	}
	if man.TrainStep != nil {
		files = append(files, man.TrainStep.File)
	}
	var out []PlacementReport
	for _, f := range files {
		path := filepath.Join(dir, f)
		m, err := ortgraph.Load(path)
		if err != nil {
			return nil, err
		}
		g := ortgraph.NewGraph(m)
		types := map[string][]int32{}
		for _, n := range g.P.Node {
			var ts []int32
			for _, o := range n.Output {
				ts = append(ts, g.ElemType(o))
			}
			types[n.Name] = ts
			for _, a := range n.Attribute {
				if a.G != nil {
					sg := ortgraph.NewSubgraph(g, a.G)
					for _, sn := range a.G.Node {
						var sts []int32
						for _, o := range sn.Output {
							sts = append(sts, sg.ElemType(o))
						}
						types[sn.Name] = sts
					}
				}
			}
		}
		ps, err := ortrun.Placements(path, opts)
		if err != nil {
			return nil, err
		}
		r := PlacementReport{File: f, ByProvider: map[string]int{}}
		for _, p := range ps {
			r.ByProvider[p.Provider]++
			if !strings.HasPrefix(p.Provider, "CPU") {
				continue
			}
			ts, ok := types[p.Name]
			desc := fmt.Sprintf("%s (%s)", p.Name, p.OpType)
			switch {
			case !ok:
				r.Inserted = append(r.Inserted, desc)
			case allIntegral(ts):
				r.ShapeOnCPU = append(r.ShapeOnCPU, desc)
			default:
				r.ComputeOnCPU = append(r.ComputeOnCPU, desc)
			}
		}
		sort.Strings(r.ComputeOnCPU)
		out = append(out, r)
	}
	return out, nil
}

// allIntegral reports whether every known output type is an integer or boolean one
// (unknown types count as integral only when the op is a shape op; callers list them).
func allIntegral(ts []int32) bool {
	for _, t := range ts {
		switch t {
		case ortgraph.Int64, ortgraph.Int32, ortgraph.Bool, ortgraph.Uint8:
		default:
			return false
		}
	}
	return true
}
